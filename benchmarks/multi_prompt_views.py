"""Where multi-prompt decoding gains or loses: each template alone, and a plain ensemble of them, from the cache.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/multi_prompt_views.py   (after the multi_prompt bench)

Reads the features the ``multi_prompt`` bench cached (``benchmarks/results/multi_prompt/features.sqlite``; no
model query is made: a missing feature is an error) and, on the same samples and test subsets, scores DecT
(the default solver) on each of the task's four templates alone, and the ensemble that averages the four DecTs'
class probabilities — the simplest way to use several prompts, beside mpd's optimal-transport decoder. This is
an analysis of the bench's test results, not a choice of anything: no default is picked from it. Writes
``benchmarks/results/multi_prompt_views.{json,md}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TASKS = ["sst2", "agnews", "trec", "rte"]
SEEDS = [0, 1, 2, 3, 4]


def main() -> None:
    from edgetune.backends import FeatureCache, load_backend
    from edgetune.data.sampling import subsample
    from edgetune.data.tasks import load_task
    from edgetune.methods import DecT

    cache = FeatureCache(HERE / "results" / "multi_prompt" / "features.sqlite")
    be = load_backend("smollm2-135m", cache=cache, progress=False)
    out: dict = {}
    for name in TASKS:
        task = load_task(name)
        full = task.load("test")
        test = subsample(full, 500, 0) if len(full) > 500 else full
        y = np.array(test.label_ids())
        per: dict[str, list[float]] = {}
        for seed in SEEDS:
            train = task.sample(16, seed)
            probs = []
            for i, t in enumerate(task.all_templates):
                m = DecT(be, template=t, seed=seed).fit(train)  # DecT's own fit on template i, from the cache
                s = m.class_scores(test)
                p = np.exp(s - s.max(1, keepdims=True))
                probs.append(p / p.sum(1, keepdims=True))
                per.setdefault(f"template {i + 1}", []).append(float((s.argmax(1) == y).mean()))
            per.setdefault("ensemble of 4", []).append(float((np.mean(probs, 0).argmax(1) == y).mean()))
        if be.total_queries:
            raise SystemExit("a feature was not in the bench's cache: run the multi_prompt bench first")
        out[name] = {k: [float(np.mean(v)), float(np.std(v, ddof=1))] for k, v in per.items()}
        print(name, {k: f"{100 * a:.1f} ± {100 * b:.1f}" for k, (a, b) in out[name].items()}, flush=True)
    (HERE / "results" / "multi_prompt_views.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    cols = list(next(iter(out.values())))
    md = ["# DecT on each template alone, and their ensemble · `python benchmarks/multi_prompt_views.py`", "",
          "SmolLM2-135M, 16-shot, 5 seeds, the multi_prompt bench's samples and test subsets (500; rte 277), from "
          "its cache. Templates in the registry's order (template 1 is the one every other table uses). "
          "Accuracy %, mean ± std over seeds.", "", "| task | " + " | ".join(cols) + " |",
          "|---|" + "---:|" * len(cols)]
    for name, row in out.items():
        md.append(f"| {name} | " + " | ".join(f"{100 * a:.1f} ± {100 * b:.1f}" for a, b in row.values()) + " |")
    (HERE / "results" / "multi_prompt_views.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
