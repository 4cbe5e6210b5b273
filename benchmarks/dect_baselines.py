"""DecT vs zero-shot vs calibrated zero-shot vs linear probe (plus the reference DecT configuration).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/dect_baselines.py [--tasks ...] [--test-size 400]

Runs twice: first with an empty feature cache (measures real model queries and extraction time), then
again on the warm cache (must make 0 queries). Writes benchmarks/results/dect_baselines.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgetune.backends import FeatureCache, load_backend
from edgetune.bench.experiment import machine_info, run_output_edge, write_json
from edgetune.bench.report import NAMES, pct
from edgetune.data import load_task

REFERENCE = ("DecT (reference config: λ=1/shots, raw h, random fixed prototypes)", "dect",
             {"lam": None, "normalize": "none", "prototypes": "random"})
INV_SHOTS = ("DecT (edgetune, λ=1/shots)", "dect", {"lam": None})
METHODS = ("zeroshot", "calibrated", "linear_probe", "dect", INV_SHOTS, REFERENCE)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "agnews", "trec", "rte"])
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--test-size", type=int, default=400)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dect_baselines"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(tmp) / "features.sqlite")
        backend = load_backend(args.model, cache=cache)
        cold, warm = [], []
        for name in args.tasks:
            task = load_task(name)
            t0 = time.perf_counter()
            cold.append(run_output_edge(task, backend, args.shots, args.seeds, METHODS, args.test_size))
            t1 = time.perf_counter()
            warm.append(run_output_edge(task, backend, args.shots, args.seeds, METHODS, args.test_size))
            t2 = time.perf_counter()
            print(f"{name}: cold run {t1 - t0:.1f} s ({cold[-1].extraction.queries} queries), "
                  f"warm run {t2 - t1:.1f} s ({warm[-1].extraction.queries} queries)", flush=True)
    out = Path(args.out)
    write_json(cold, out.with_suffix(".json"))
    write_json(warm, out.with_name(out.name + "_rerun.json"))

    lines = [f"# DecT vs baselines · {args.model} · {args.shots}-shot · seeds {args.seeds}",
             "", f"Machine: {json.dumps(machine_info())}",
             f"Test sets: a seeded random subset of {args.test_size} examples (seed 0; the full set where smaller), "
             "the same for every method. Accuracy in %, mean ± sample std over seeds.", ""]
    labels = [m if isinstance(m, str) else m[0] for m in METHODS]
    lines.append("| task | " + " | ".join(NAMES.get(m, m) for m in labels) + " | queries (cold → rerun) | "
                 "extraction s | DecT train ms |")
    lines.append("|---" * (len(labels) + 4) + "|")
    for c, w in zip(cold, warm, strict=True):
        s = c.summary()
        cells = [pct(s[m]["mean"], s[m]["std"]) for m in labels]
        lines.append(f"| {c.task} (n={c.n_test}) | " + " | ".join(cells) +
                     f" | {c.extraction.queries} → {w.extraction.queries} | {c.extraction.seconds:.1f} | "
                     f"{s['dect']['fit_seconds_mean'] * 1000:.0f} |")
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
