"""Is DecT's decoder under-trained on many classes? Its training length and rate checked on train-pool data.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/many_class_decoder.py [--seeds 0 1 2 3 4]
            [--epochs 10 20 30 60 100] [--lrs 0.01 0.03]

DecT's 30 Adam epochs at 0.01 come from the paper's 2-14-class tasks. On mixed36 (36 classes,
``benchmarks/many_class.yaml``) it lost 4.9 points to the linear probe. Here each seed's 16-shot sample is
trained on and the *other* seeds' samples (train-pool examples outside this sample) are the validation split:
no test example takes part in the choice, and no new query is made (every feature is in the many_class bench's
cache, ``benchmarks/results/many_class/features.sqlite``; run that bench first). The linear probe and the
centroid are scored on the same validation split for reference, and so is DecT with ``epochs`` as a list (the
length chosen with λ by its own cross-validation on the 16-shot sample). Only after the choice is made on validation is
the test accuracy of the chosen setting and of the default reported (the bench's 499 test examples).

Writes ``benchmarks/results/many_class_decoder.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from edgetune.backends import FeatureCache, load_backend
from edgetune.data.tasks import load_task
from edgetune.data.templates import Template
from edgetune.methods import get_method
from edgetune.methods.core.estimator import content_free_examples
from edgetune.methods.core.output_edge import extract

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default=str(HERE / "data" / "mixed36" / "task.yaml"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--cache", default=str(HERE / "results" / "many_class" / "features.sqlite"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", nargs="+", type=int, default=[10, 20, 30, 60, 100])
    ap.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.03])
    ap.add_argument("--cv-lists", nargs="*", default=["10,20,30", "5,10,20,30", "10,20,30,60,100"],
                    help="candidate lengths for DecT's own cross-validated choice, one comma-separated list each")
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--out", default=str(HERE / "results" / "many_class_decoder"))
    args = ap.parse_args()
    if not Path(args.cache).is_file():
        raise SystemExit(f"{args.cache} not found: run `edgetune bench benchmarks/many_class.yaml` first")
    task = load_task(args.task)
    backend = load_backend(args.model, cache=FeatureCache(args.cache), progress=True)
    template = Template(task.template)
    words, labels = task.words, task.labels
    samples = {s: task.sample(args.shots, s) for s in args.seeds}
    extract(backend, content_free_examples(template), [template], words, "content-free")  # cached for the fits

    def feats(examples, what):
        out = extract(backend, examples, [template], words, what)
        if out.queries:
            print(f"  ({out.queries} {what} were not cached and were queried)")
        return out

    settings = [("dect", {"epochs": e, "lr": lr}) for e, lr in itertools.product(args.epochs, args.lrs)]
    cv_keys = []
    for choices in ([int(e) for e in c.split(",")] for c in args.cv_lists):  # chosen by DecT's own CV
        settings.append(("dect", {"epochs": choices}))
        cv_keys.append("dect epochs=" + str(choices))
    settings += [("linear_probe", {}), ("centroid", {})]
    val_acc: dict[str, list[float]] = {}
    fit_s: dict[str, list[float]] = {}
    fitted: dict[tuple[str, int], object] = {}
    for s in args.seeds:
        train = samples[s]
        ids = {ex.id for ex in train}
        seen: set[str] = set()
        val = []
        for t in args.seeds:
            for ex in samples[t]:
                if t != s and ex.id not in ids and ex.id not in seen:
                    seen.add(ex.id)
                    val.append(ex)
        feats(train, f"seed {s} sample")  # cached for the fits below
        f_val = feats(val, f"seed {s} validation")
        y_val = np.array([labels.index(ex.label) for ex in val])
        print(f"seed {s}: {len(train)} training, {len(val)} validation examples (other seeds' samples)")
        for name, params in settings:
            key = name + "".join(f" {k}={v}" for k, v in params.items())
            method = get_method(name)(model=backend, **params, **({"seed": s} if name == "dect" else {}))
            prepared = method.prepare(train)  # the method's own prompts and features (cached above)
            start = time.perf_counter()
            method.fit_prepared(**vars(prepared))
            fit_s.setdefault(key, []).append(time.perf_counter() - start)
            acc = float((method.decision_features(f_val).argmax(1) == y_val).mean())
            val_acc.setdefault(key, []).append(acc)
            fitted[(key, s)] = method
            picked = f", {method.epochs_} epochs" if isinstance(params.get("epochs"), list) else ""
            print(f"  {key}: validation {100 * acc:.1f} % ({fit_s[key][-1]:.1f} s{picked})")
    dect_keys = [k for k in val_acc if k.startswith("dect") and k not in cv_keys]
    default = "dect epochs=30 lr=0.01" if "dect epochs=30 lr=0.01" in val_acc else dect_keys[0]
    chosen = max(dect_keys, key=lambda k: np.mean(val_acc[k]))
    test = task.load("test")
    f_test = feats(test, "test")
    y_test = np.array([labels.index(ex.label) for ex in test])
    test_acc = {k: [float((fitted[(k, s)].decision_features(f_test).argmax(1) == y_test).mean())
                    for s in args.seeds] for k in {default, chosen, *cv_keys, "linear_probe", "centroid"}}
    result = {"task": task.name, "model": args.model, "shots": args.shots, "seeds": args.seeds,
              "validation": val_acc, "fit_seconds": fit_s, "default": default, "chosen": chosen, "test": test_acc}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1), encoding="utf-8")

    def ms(x: list[float]) -> str:
        return f"{100 * np.mean(x):.1f} ± {100 * np.std(x, ddof=1):.1f}" if len(x) > 1 else f"{100 * x[0]:.1f}"

    md = [f"# DecT's training length, {task.name} ({len(labels)} classes) · `python benchmarks/many_class_decoder.py`",
          "", f"{args.model}, {args.shots}-shot, seeds {args.seeds}. Validation: the other seeds' samples (train pool, "
          "never test). Accuracy %, mean ± std over seeds; fit seconds median (this 2-core CPU, 1 torch thread).", "",
          "| setting | validation | fit s |", "|---|---:|---:|"]
    md += [f"| {k} | {ms(v)} | {np.median(fit_s[k]):.1f} |" for k, v in val_acc.items()]
    md += ["", f"Chosen on validation: **{chosen}** (default: {default}). Test accuracy ({len(test)} examples), "
           "reported after the choice:", "", "| setting | test |", "|---|---:|"]
    md += [f"| {k} | {ms(test_acc[k])} |" for k in sorted(test_acc)]
    out.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
