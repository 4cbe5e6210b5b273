"""Assemble ``mixed36``, a 36-class task, from five tasks of the shared data (issue 14's many-class task).

Usage:  python scripts/assemble_mixed.py [--data-dir ../shared/data]

Every class of sst2 (2), agnews (4), dbpedia (14), yahoo (10) and trec (6) becomes one class of a single task,
named in snake or camel case so that edgetune derives its readable label name (no label words are given:
``world_news`` → "world news", ``EducationalInstitution`` → "educational institution"). What makes it hard is
not the count alone: classes overlap across sources (``sports_news``, ``sports_question``, ``Athlete``;
``business_news``, ``business_and_finance_question``, ``Company``; ``person_question`` and ``OfficeHolder``),
so a model must use the text's kind as well as its topic, and most label names are several tokens.

Train pool: up to 100 examples per class from the source's train split; test: 14 per class from the source's
test split (504), both drawn with a fixed seed; texts longer than 600 characters are cut there (yahoo and
dbpedia). Writes ``benchmarks/data/mixed36/{train,test}.jsonl.xz`` and ``task.yaml`` (template
``"{text} Category: {mask}"``). The sources' licences are in the shared data's README (all permit this use).
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "benchmarks"
OUT = HERE / "data" / "mixed36"
NAMES = {
    "sst2": {"negative": "negative_movie_review", "positive": "positive_movie_review"},
    "agnews": {"World": "world_news", "Sports": "sports_news", "Business": "business_news",
               "Sci/Tech": "science_and_technology_news"},
    "dbpedia": None,  # its CamelCase class names as they are
    "yahoo": {"Society & Culture": "society_and_culture_question", "Science & Mathematics":
              "science_and_mathematics_question", "Health": "health_question", "Education & Reference":
              "education_and_reference_question", "Computers & Internet": "computers_and_internet_question",
              "Sports": "sports_question", "Business & Finance": "business_and_finance_question",
              "Entertainment & Music": "entertainment_and_music_question", "Family & Relationships":
              "family_and_relationships_question", "Politics & Government": "politics_and_government_question"},
    "trec": {"ABBR": "abbreviation_question", "ENTY": "entity_question", "DESC": "description_question",
             "HUM": "person_question", "LOC": "location_question", "NUM": "number_question"},
}
TRAIN_PER_CLASS, TEST_PER_CLASS, MAX_CHARS = 100, 14, 600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data"))
    args = ap.parse_args()
    rng = random.Random(0)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    labels: list[str] = []
    for source, names in NAMES.items():
        for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
            rows = [json.loads(x) for x in (Path(args.data_dir) / source / f"{split}.jsonl").read_text(
                encoding="utf-8").splitlines() if x.strip()]
            by: dict[str, list[dict]] = {}
            for r in rows:
                by.setdefault(r["label"], []).append(r)
            for label in sorted(by):
                name = names[label] if names else label
                if split == "train":
                    labels.append(name)
                for r in rng.sample(by[label], min(per_class, len(by[label]))):
                    splits[split].append({"text": r["text"][:MAX_CHARS], "label": name, "source": source})
    OUT.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        rng.shuffle(rows)
        with lzma.open(OUT / f"{split}.jsonl.xz", "wt", encoding="utf-8", preset=9) as fh:
            for i, r in enumerate(rows):
                fh.write(json.dumps({"id": f"{split}-{i}", **r}, ensure_ascii=False) + "\n")
    (OUT / "task.yaml").write_text(
        "# Written by scripts/assemble_mixed.py (see its docstring). No label words: each label's readable\n"
        "# name is its word.\n"
        "name: mixed36\n"
        "template: \"{text} Category: {mask}\"\n"
        "# further templates for multi-prompt decoding (mpd)\n"
        "templates: [\"{text} Topic: {mask}\", \"Text: {text} Label: {mask}\", "
        "\"{text} The text above is about {mask}\"]\n"
        f"labels: [{', '.join(labels)}]\n"
        "files: {train: train.jsonl.xz, test: test.jsonl.xz}\n", encoding="utf-8")
    print(f"{len(labels)} classes; train {len(splits['train'])}, test {len(splits['test'])} -> {OUT}")


if __name__ == "__main__":
    main()
