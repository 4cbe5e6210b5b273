"""150 classes, 16 shots (2,400 training prompts): does every output-edge method and SetFit run on this CPU, in
what time and memory? A scale test, not an accuracy one.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/many_class_scale.py [--classes 150] [--test 300]

No task in the shared data has 150 classes, so this one is synthetic in its labels: real texts (mixed36's train
pool, ``benchmarks/data/mixed36``) dealt to 150 classes at random, each named in snake case from 15 topics × 10
kinds (``sports_news``, ``health_question``, ... : 2-5 tokens each, so every label is scored as a token
sequence). Accuracy is at chance by construction and only shows that nothing breaks; what is measured is each
method's fit time, the feature extraction time (one query per prompt, the prompt's cache shared by the 150
label continuations) and the peak resident memory of the process (``ru_maxrss``). One seed. Writes
``benchmarks/results/many_class_scale.{json,md}`` (and the bench records under ``many_class_scale/``).
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
import resource
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TOPICS = ["sports", "health", "business", "science", "music", "film", "travel", "food", "politics", "family",
          "education", "computers", "weather", "fashion", "history"]
KINDS = ["news", "question", "review", "complaint", "request", "opinion", "joke", "story", "advert", "summary"]


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=150)
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--test", type=int, default=300)
    args = ap.parse_args()
    from edgetune.bench import BenchConfig, MethodEntry, read_results, run_bench
    from edgetune.data.tasks import load_task

    names = [f"{t}_{k}" for t in TOPICS for k in KINDS][: args.classes]
    with lzma.open(HERE / "data" / "mixed36" / "train.jsonl.xz", "rt", encoding="utf-8") as fh:
        src = [json.loads(x) for x in fh]
    rng = random.Random(0)
    rng.shuffle(src)
    need = args.classes * args.shots + args.test
    if len(src) < need:
        raise SystemExit(f"mixed36's pool has {len(src)} texts; {need} needed")
    rows = [{"text": r["text"], "label": names[i % args.classes]} for i, r in enumerate(src[:need])]
    out = HERE / "results" / "many_class_scale"
    with tempfile.TemporaryDirectory() as tmp:
        for split, part in (("train", rows[: args.classes * args.shots]), ("test", rows[args.classes * args.shots :])):
            (Path(tmp) / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        (Path(tmp) / "task.yaml").write_text(
            f"name: synthetic{args.classes}\ntemplate: \"{{text}} Category: {{mask}}\"\n"
            f"labels: [{', '.join(names)}]\nfiles: {{train: train.jsonl, test: test.jsonl}}\n", encoding="utf-8")
        task = load_task(str(Path(tmp) / "task.yaml"))
        methods = [MethodEntry(n, n, {}, ("smollm2-135m",)) for n in
                   ("zeroshot", "calibrated", "batch_calibrated", "linear_probe", "centroid", "knn", "dect")]
        methods.append(MethodEntry("setfit", "setfit", {"max_steps": 64}, ("minilm-l6",)))
        config = BenchConfig(name="many_class_scale", tasks=[task], methods=methods,
                             models=["smollm2-135m", "minilm-l6"], shots=[args.shots], seeds=[0], test_size=None)
        start = time.perf_counter()
        run_bench(config, out, progress=False, fresh=True)
        total = time.perf_counter() - start
    lines = read_results(out / "results.jsonl")
    cells = [x for x in lines if x.get("type") == "cell"]
    extraction = [x for x in lines if x.get("type") == "extraction"]
    result = {"classes": args.classes, "shots": args.shots, "train_prompts": args.classes * args.shots,
              "test": args.test, "peak_rss_mib": peak_mib(), "total_seconds": total,
              "extraction": [{k: x[k] for k in ("model", "split", "queries", "seconds")} for x in extraction],
              "cells": [{k: c.get(k) for k in ("model", "method", "accuracy", "fit_seconds", "trainable_params")}
                        for c in cells]}
    (HERE / "results" / "many_class_scale.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    md = [f"# {args.classes} classes × {args.shots} shots: time and memory · "
          "`python benchmarks/perf/many_class_scale.py`",
          "", f"Synthetic labels on real texts (see the script): accuracy is chance ({100 / args.classes:.1f} %) by "
          "construction. One seed, this 2-core CPU.", "",
          f"Peak resident memory of the whole run: **{result['peak_rss_mib']:.0f} MiB**; wall time {total:.0f} s.", "",
          "| extraction | model | prompts | seconds |", "|---|---|---:|---:|"]
    md += [f"| {x['split']} | {x['model']} | {x['queries']} | {x['seconds']:.0f} |" for x in extraction]
    md += ["", "| method | model | fit s | trainable params | accuracy % |", "|---|---|---:|---:|---:|"]
    md += [f"| {c['method']} | {c['model']} | {c['fit_seconds']:.2f} | {c['trainable_params']} | "
           f"{100 * c['accuracy']:.1f} |" for c in cells]
    (HERE / "results" / "many_class_scale.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
