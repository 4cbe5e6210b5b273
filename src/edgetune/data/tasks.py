"""Task registry: label names, a prompt template and a verbalizer (label -> word) per task.

Templates and label words follow the DecT paper's released prompts (thunlp/DecT ``scripts/lm``) where
the paper has the task (sst2, imdb, yelp, agnews, dbpedia, yahoo, rte, snli, mnli), with the label word
right after the prompt so causal LMs can score it as the next token. Tasks the paper does not cover
(trec, cb, boolq, wic, qnli, mrpc, cola) get templates in the same style. Every label word must be one
token of the model's vocabulary (with its leading space) for the input-edge methods and remote APIs; an
in-process causal model scores label words of any length for the output-edge methods (see
``edgetune.backends.local``). A task given without label words reads its label names: ``transfer_money``
and ``cardArrival`` become ``"transfer money"`` and ``"card arrival"`` (:func:`readable_label`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..paths import data_dir as resolve_data_dir
from .example import Dataset, Example
from .io import read_examples
from .sampling import draw, subsample
from .templates import Template


@dataclass(frozen=True)
class Task:
    """A classification task. ``files`` maps split name -> path (bring-your-own data); registry tasks
    read ``<data_dir>/<name>/<split>.jsonl`` instead."""

    name: str
    labels: tuple[str, ...]
    template: str
    label_words: Mapping[str, str]
    description: str = ""
    files: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    splits: Mapping[str, str] = field(default_factory=dict)  # split name -> file stem where they differ
    words_derived: bool = False  # True: no label words were given; each is its label's readable name
    #: further templates for the same label words, for methods that query each input several ways (mpd)
    templates: tuple[str, ...] = ()
    #: further label-word sets (label -> word each), for methods that score several words per class (mpd)
    more_label_words: tuple[Mapping[str, str], ...] = ()
    #: several labels per text (rows carry a list of labels); also found from the data itself
    multi_label: bool = False
    #: a multi-label row may have no label at all (an empty list); refused otherwise
    allow_empty: bool = False
    #: what joins several labels in one CSV/TSV cell (``"|"``); JSONL rows give a list instead
    label_sep: str | None = None

    def __post_init__(self) -> None:
        Template(self.template)  # validates
        for t in self.templates:
            Template(t)
        if not self.labels:
            raise DataError(f"task {self.name!r} has no labels")
        if len(self.labels) < 2:
            where = f" (read from {self.files['train']})" if "train" in self.files and not self.label_words else ""
            raise DataError(f"task {self.name!r} has only the label {self.labels[0]!r}{where}: a classifier needs at "
                            "least two (give the others with --label-words LABEL:WORD,...)")
        twice = sorted({lab for lab in self.labels if self.labels.count(lab) > 1})
        if twice:
            raise DataError(f"task {self.name!r}: label(s) {twice} are listed more than once")
        if any(not str(lab).strip() for lab in self.labels):
            raise DataError(f"task {self.name!r}: a label name is empty")
        if not self.label_words:  # none given: each label's readable name is its word
            object.__setattr__(self, "label_words", {lab: readable_label(lab) for lab in self.labels})
            object.__setattr__(self, "words_derived", True)
        self._check_words(f"task {self.name!r}", self.label_words)
        for i, more in enumerate(self.more_label_words):
            self._check_words(f"task {self.name!r}: more_label_words[{i}]", more)

    def _check_words(self, where: str, words: Mapping[str, str]) -> None:
        """One label-word set (the main one or a further one): a non-empty word for each label, no other
        labels, no word shared by two labels."""
        missing = [lab for lab in self.labels if lab not in words]
        if missing:
            raise DataError(f"{where}: no label word for label(s) {missing}")
        extra = [lab for lab in words if lab not in self.labels]
        if extra:
            raise DataError(f"{where}: label word given for unknown label(s) {extra}")
        listed = [str(words[lab]).strip() for lab in self.labels]
        if not all(listed):
            raise DataError(f"{where}: a label word is empty ({listed})")
        if len(set(listed)) != len(listed):
            raise DataError(f"{where}: two labels share a label word ({listed})")

    @property
    def words(self) -> list[str]:
        """Label words in label order."""
        return [self.label_words[lab] for lab in self.labels]

    @property
    def more_words(self) -> list[list[str]]:
        """The further label-word sets (:attr:`more_label_words`), each in label order."""
        return [[str(more[lab]).strip() for lab in self.labels] for more in self.more_label_words]

    def with_data_dir(self, path: str | os.PathLike | None) -> Task:
        return replace(self, data_dir=None if path is None else str(path))

    def split_path(self, split: str) -> Path:
        if split in self.files:
            path = Path(self.files[split]).expanduser()
        else:
            root = resolve_data_dir(self.data_dir)
            path = root / self.name / f"{self.splits.get(split, split)}.jsonl"
            if not path.is_file() and path.with_name(path.name + ".xz").is_file():
                path = path.with_name(path.name + ".xz")  # as installed with edgetune
        if not (path.is_file() or (split in self.files and path.is_dir())):  # a folder: a saved HF dataset
            if split in self.files:
                raise DataError(f"task {self.name!r}: its {split} file {str(path)!r} does not exist")
            have = sorted({p.name.split(".")[0] for p in path.parent.glob("*.jsonl*")}) if path.parent.is_dir() else []
            hint = f" (available splits: {', '.join(have)})" if have else ""
            raise DataError(f"task {self.name!r}: no {split!r} split at {str(path)!r}{hint}")
        return path

    def load(self, split: str = "test", limit: int | None = None, seed: int = 0) -> Dataset:
        """Read one split. ``limit`` takes a seeded random subset of that size (the same for every method)."""
        path = self.split_path(split)
        examples = read_examples(path, labels=self.labels, split=split, label_sep=self.label_sep,
                                 **dict(self.columns))
        if self.multi_label or any(e.labels is not None for e in examples):
            examples = [as_multi_label(e) for e in examples]
            empty = next((e for e in examples if e.labels == ()), None)
            if empty is not None and not self.allow_empty:
                raise DataError(f"{path}: example {empty.id} has an empty label list; task {self.name!r} needs at "
                                "least one label per text (allow_empty: true in its task file allows none)")
        ds = Dataset(tuple(examples), self.labels, name=f"{self.name}/{split}", task=self)
        return subsample(ds, limit, seed) if limit is not None and limit < len(ds) else ds

    def sample(self, shots: int, seed: int, split: str = "train", how: str = "per_class") -> Dataset:
        """Draw ``shots`` examples per class from ``split`` with ``seed`` (deterministic); ``how="natural"``: ``shots``
        examples in all, at the split's own label distribution (:func:`sample_natural`)."""
        return draw(self.load(split), shots, seed, how)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": list(self.labels),
            "template": self.template,
            "label_words": dict(self.label_words),
            "description": self.description,
            **({"templates": list(self.templates)} if self.templates else {}),
            **({"more_label_words": [dict(m) for m in self.more_label_words]} if self.more_label_words else {}),
            **({"multi_label": True} if self.multi_label else {}),
            **({"allow_empty": True} if self.allow_empty else {}),
        }

    @property
    def all_templates(self) -> list[str]:
        """The main template first, then the alternatives."""
        return [self.template, *(t for t in self.templates if t != self.template)]

    def derived_words_note(self) -> str:
        """One line saying which label words were derived from label names (empty if none differ)."""
        if not self.words_derived:
            return ""
        changed = [f"{lab} → {self.label_words[lab]!r}" for lab in self.labels if self.label_words[lab] != lab]
        if not changed:
            return f"{self.name}: no label words given; the label names are the words"
        more = f" (+{len(changed) - 8} more)" if len(changed) > 8 else ""
        return f"{self.name}: no label words given; read from the label names: {', '.join(changed[:8])}{more}"


def as_multi_label(example: Example) -> Example:
    """``example`` with its label as a one-label list, for a multi-label task (a label list is kept as it is)."""
    if example.labels is not None or example.label is None:
        return example
    return replace(example, label=None, labels=(example.label,))


def readable_label(name: str) -> str:
    """A label name as words: ``transfer_money`` → ``transfer money``, ``cardArrival`` → ``card arrival``,
    ``EducationalInstitution`` → ``educational institution``, ``HTTPError`` → ``HTTP error``; names that are
    already words (``Sci/Tech``, ``ABBR``, ``positive``) are kept as they are."""
    text = re.sub(r"[_\-]+", " ", str(name)).strip()
    # split camel case: aB -> a B, ABc -> A Bc (keeping acronyms whole)
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", text)
    if text == str(name).strip():
        return text  # already words
    words = text.split()
    if len(words) > 1:  # lower-case the capitalised pieces of a compound name, keep acronyms
        words = [w if (w.isupper() and len(w) > 1) else w.lower() for w in words]
    return " ".join(words) if words else str(name)


_SENTIMENT = "{text} In summary, it was {mask}"
# Alternative templates (same label words) for multi-prompt decoding; written for this registry in the style of
# the main ones (the label word last), not taken from a paper.
_SENTIMENT_ALT = ("{text} All in all, the film was {mask}", "Review: {text} Sentiment: {mask}",
                  "{text} In short, it was {mask}")
_TOPIC_ALT = ("News: {text} This article is about {mask}", "{text} Category: {mask}",
              "{text} This text is about {mask}")
_ENTAIL_ALT = ("Premise: {text} Hypothesis: {text_b} Does the premise entail the hypothesis? {mask}",
               "{text} Question: is it true that {text_b}? Answer: {mask}",
               "\"{text}\" implies \"{text_b}\". Correct? {mask}")
# Further label-word sets for multi-prompt decoding (several words per class); written for this registry.
_SENTIMENT_MORE = ({"negative": "terrible", "positive": "good"}, {"negative": "awful", "positive": "wonderful"})
_TOPIC4_MORE = ({"World": "world", "Sports": "football", "Business": "economy", "Sci/Tech": "science"},
                {"World": "international", "Sports": "sport", "Business": "finance", "Sci/Tech": "computers"})
_YESNO_MORE = ({"entailment": "True", "not_entailment": "False"}, {"entailment": "Right", "not_entailment": "Wrong"})
_GOEMOTIONS = ("admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
               "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear", "gratitude",
               "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief", "remorse",
               "sadness", "surprise", "neutral")
_NLI3 = {"entailment": "Yes", "neutral": "Maybe", "contradiction": "No"}
_ENTAIL = "{text} {text_b} Does the first sentence entail the second sentence? {mask}"

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("sst2", ("negative", "positive"), _SENTIMENT, {"negative": "bad", "positive": "great"},
             "SST-2 movie-review sentence sentiment", templates=_SENTIMENT_ALT,
             more_label_words=_SENTIMENT_MORE),
        Task("imdb", ("negative", "positive"), _SENTIMENT, {"negative": "bad", "positive": "great"},
             "IMDB movie-review sentiment", templates=_SENTIMENT_ALT,
             more_label_words=_SENTIMENT_MORE),
        Task("yelp", ("negative", "positive"), _SENTIMENT, {"negative": "bad", "positive": "great"},
             "Yelp review polarity (test split only)", templates=_SENTIMENT_ALT,
             more_label_words=_SENTIMENT_MORE),
        Task("agnews", ("World", "Sports", "Business", "Sci/Tech"),
             "{text} The topic of this sentence is {mask}",
             {"World": "politics", "Sports": "sports", "Business": "business", "Sci/Tech": "technology"},
             "AG News topic", templates=_TOPIC_ALT, more_label_words=_TOPIC4_MORE),
        Task("dbpedia",
             ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
              "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
             "{text} The topic of this sentence is {mask}",
             {"Company": "company", "EducationalInstitution": "school", "Artist": "artist", "Athlete": "athlete",
              "OfficeHolder": "politics", "MeanOfTransportation": "transportation", "Building": "building",
              "NaturalPlace": "river", "Village": "village", "Animal": "animal", "Plant": "plant",
              "Album": "album", "Film": "film", "WrittenWork": "book"},
             "DBpedia-14 ontology class", templates=_TOPIC_ALT),
        Task("yahoo",
             ("Society & Culture", "Science & Mathematics", "Health", "Education & Reference",
              "Computers & Internet", "Sports", "Business & Finance", "Entertainment & Music",
              "Family & Relationships", "Politics & Government"),
             "{text} The topic of this sentence is {mask}",
             {"Society & Culture": "society", "Science & Mathematics": "science", "Health": "health",
              "Education & Reference": "education", "Computers & Internet": "computers", "Sports": "sports",
              "Business & Finance": "business", "Entertainment & Music": "entertainment",
              "Family & Relationships": "family", "Politics & Government": "politics"},
             "Yahoo! Answers topic", templates=_TOPIC_ALT),
        Task("trec", ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
             "Question: {text} The answer to this question is a {mask}",
             {"ABBR": "abbreviation", "ENTY": "thing", "DESC": "description", "HUM": "person",
              "LOC": "location", "NUM": "number"},
             "TREC question type (6 coarse classes)",
             templates=("{text} The question asks for a {mask}", "Q: {text} Type of answer: {mask}",
                        "{text} The expected answer is a {mask}"),
             more_label_words=({"ABBR": "acronym", "ENTY": "object", "DESC": "definition", "HUM": "human",
                                "LOC": "place", "NUM": "quantity"},
                               {"ABBR": "short", "ENTY": "entity", "DESC": "explanation", "HUM": "name",
                                "LOC": "country", "NUM": "date"})),
        Task("rte", ("entailment", "not_entailment"), _ENTAIL, {"entailment": "Yes", "not_entailment": "No"},
             "RTE textual entailment", templates=_ENTAIL_ALT, more_label_words=_YESNO_MORE),
        Task("cb", ("entailment", "contradiction", "neutral"), _ENTAIL, _NLI3, "CommitmentBank (3-way NLI)",
             templates=_ENTAIL_ALT),
        Task("snli", ("entailment", "neutral", "contradiction"), _ENTAIL, _NLI3, "SNLI (3-way NLI)"),
        Task("mnli", ("entailment", "neutral", "contradiction"), _ENTAIL, _NLI3,
             "MultiNLI (3-way NLI; test = 1,000 pairs of dev-matched)", splits={"test": "test_matched"}),
        Task("boolq", ("false", "true"), "{text} Question: {text_b}? Answer: {mask}",
             {"false": "No", "true": "Yes"}, "BoolQ yes/no questions (text = passage, text_b = question)"),
        Task("wic", ("false", "true"),
             "{text} {text_b} Is the word \"{word}\" used in the same sense in both sentences? {mask}",
             {"false": "No", "true": "Yes"}, "Word-in-Context"),
        Task("qnli", ("entailment", "not_entailment"),
             "Question: {text} Sentence: {text_b} Does the sentence answer the question? {mask}",
             {"entailment": "Yes", "not_entailment": "No"}, "QNLI question/sentence entailment"),
        Task("mrpc", ("not_equivalent", "equivalent"),
             "{text} {text_b} Do both sentences mean the same thing? {mask}",
             {"not_equivalent": "No", "equivalent": "Yes"}, "MRPC paraphrase"),
        Task("cola", ("unacceptable", "acceptable"),
             "{text} Is this sentence grammatically correct? {mask}",
             {"unacceptable": "No", "acceptable": "Yes"}, "CoLA grammatical acceptability"),
        # the labels are GoEmotions' own names (emotions.txt, id order); each name is its label word, except the
        # two that are two tokens for SmolLM2 (remote APIs and input-edge methods need one): a one-token synonym
        Task("goemotions", _GOEMOTIONS, "{text} The emotion in this comment is {mask}",
             {**{lab: lab for lab in _GOEMOTIONS}, "annoyance": "irritation", "disapproval": "disagreement"},
             "GoEmotions Reddit comments, 27 emotions + neutral, several labels per text (train = the official dev "
             "split)", multi_label=True),
    ]
}


def parse_label_words(spec: str | Mapping[str, str]) -> dict[str, str]:
    """``"negative:bad,positive:great"`` (or a mapping) -> ``{"negative": "bad", "positive": "great"}``."""
    pairs: list[tuple[str, str]]
    if isinstance(spec, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in spec.items()]
    else:
        pairs = []
        for item in spec.split(","):
            if not item.strip():
                continue
            if ":" not in item:
                raise DataError(f"label words {spec!r}: expected LABEL:WORD pairs separated by commas")
            label, word = item.rsplit(":", 1)
            pairs.append((label.strip(), word.strip()))
    out: dict[str, str] = {}
    for label, word in pairs:
        if not label or not word:
            raise DataError(f"label words {spec!r}: {'a label' if not label else f'label {label!r}'} has an empty "
                            "word; give LABEL:WORD with both")
        if label in out:
            raise DataError(f"label words {spec!r}: label {label!r} is given twice ({out[label]!r} and {word!r})")
        out[label] = word
    if not out:
        raise DataError(f"label words {spec!r} are empty")
    return out


def load_task(
    name: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    template: str | int | None = None,
    label_words: str | Mapping[str, str] | None = None,
) -> Task:
    """A registry task by name, or a task file (YAML/JSON) by path; template and words may be overridden (a
    template given as a number, ``"1"``, picks one of the task's own templates: 0 is its main one)."""
    path = Path(name)
    if str(name) in TASKS:
        task = TASKS[str(name)].with_data_dir(data_dir)
    elif path.suffix.lower() in (".yaml", ".yml", ".json") and path.is_file():
        task = task_from_file(path)
        if data_dir is not None:
            task = task.with_data_dir(data_dir)
    elif path.suffix.lower() in (".yaml", ".yml", ".json"):
        raise DataError(f"task file {str(path)!r} does not exist")
    else:
        raise DataError(f"unknown task {str(name)!r}; known: {', '.join(TASKS)} (or give a task .yaml file)")
    if isinstance(template, int) or (isinstance(template, str) and template.strip().isdigit()):
        choices, index = task.all_templates, int(template)
        if index >= len(choices):
            raise DataError(f"template {index}: task {task.name!r} has {len(choices)} template(s), numbered 0 to "
                            f"{len(choices) - 1}")
        template = choices[index]
    if template is not None or label_words is not None:
        task = replace(
            task,
            template=template if template is not None else task.template,
            label_words=parse_label_words(label_words) if label_words is not None else task.label_words,
            # the further word sets go with the words they were written beside
            more_label_words=task.more_label_words if label_words is None else (),
        )
    return task


def task_from_file(path: str | os.PathLike) -> Task:
    """Read a small task file::

        name: reviews
        template: "{text} All in all, it was {mask}"
        label_words: {negative: bad, positive: great}   # optional: defaults to the labels' readable names
                                              # (or a list of words in the order of 'labels')
        labels: [negative, positive]          # optional: defaults to the label_words keys
        files: {train: train.csv, test: test.csv}   # relative to the task file
        columns: {text: review, label: stars}        # optional column names
        templates: ["Review: {text} Verdict: {mask}"]  # optional further templates (multi-prompt methods)
        more_label_words: [{negative: awful, positive: good}]  # optional further word sets (multi-prompt methods)
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.suffix != ".json" else json.loads(
            path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise DataError(f"task file {str(path)!r} is malformed: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise DataError(f"task file {str(path)!r} must hold a mapping")
    if "template" not in raw:
        raise DataError(f"task file {str(path)!r} lacks 'template'")
    if "label_words" not in raw and "labels" not in raw:
        raise DataError(f"task file {str(path)!r} needs 'labels' or 'label_words' (or both)")
    spec = raw.get("label_words")
    if isinstance(spec, list):  # a list of words, one per label, in the order of 'labels'
        labels = raw.get("labels")
        if not isinstance(labels, list) or len(labels) != len(spec):
            raise DataError(f"task file {str(path)!r}: 'label_words' given as a list needs 'labels' as a list of "
                            f"the same length ({len(spec)}), or write it as a mapping {{label: word}}")
        spec = {str(k): str(v) for k, v in zip(labels, spec, strict=True)}
    words = parse_label_words(spec) if spec else {}
    files = {k: str((path.parent / v).resolve()) for k, v in dict(raw.get("files", {})).items()}
    return Task(
        name=str(raw.get("name", path.stem)),
        labels=tuple(str(x) for x in raw.get("labels", list(words))),
        template=str(raw["template"]),
        label_words=words,
        description=str(raw.get("description", "")),
        files=files,
        columns={str(k): str(v) for k, v in dict(raw.get("columns", {})).items()},
        templates=tuple(str(t) for t in raw.get("templates", ())),
        more_label_words=tuple(_word_set(path, i, m) for i, m in enumerate(raw.get("more_label_words") or ())),
        multi_label=bool(raw.get("multi_label", False)),
        allow_empty=bool(raw.get("allow_empty", False)),
        label_sep=None if raw.get("label_sep") is None else str(raw["label_sep"]),
    )


def _word_set(path: Path, i: int, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise DataError(f"task file {str(path)!r}: more_label_words[{i}] must map each label to a word")
    return {str(k): str(v) for k, v in raw.items()}


def custom_task(
    name: str,
    template: str,
    label_words: str | Mapping[str, str] | None,
    files: Mapping[str, str],
    columns: Mapping[str, str] | None = None,
    labels: Sequence[str] | None = None,
    label_sep: str | None = None,
) -> Task:
    """A bring-your-own task from files given on the command line or in Python. Without ``label_words``
    the labels are read from the training file (sorted) and each label's readable name is its word. ``label_sep``:
    a CSV/TSV label cell holds several labels joined by it (multi-label); JSONL rows with a list of labels are
    multi-label without it."""
    words = parse_label_words(label_words) if label_words else {}
    columns = dict(columns or {})
    if not labels and not words:
        if "train" not in files:
            raise DataError(f"task {name!r}: without label words, a train file is needed to read the labels from")
        rows = read_examples(files["train"], text=columns.get("text", "text"), text_b=columns.get("text_b"),
                             label=columns.get("label", "label"), label_sep=label_sep)
        labels = sorted({name for ex in rows for name in (ex.labels if ex.labels is not None else (ex.label,))
                         if name is not None})
        multi = label_sep is not None or any(ex.labels is not None for ex in rows)
    else:
        multi = label_sep is not None
    return Task(name, tuple(labels) if labels else tuple(words), template, words,
                files={k: str(v) for k, v in files.items()}, columns=columns, multi_label=multi, label_sep=label_sep)


def dataset_from_examples(examples: Sequence[Example], labels: Sequence[str], name: str = "") -> Dataset:
    return Dataset(tuple(examples), tuple(labels), name=name)
