"""DecT vs zero-shot vs calibrated zero-shot vs linear probe (plus the reference DecT configuration).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/dect_baselines.py [--tasks ...] [--test-size 400]

Runs the grid twice through edgetune's runner: first with an empty feature cache (measures real model
queries and extraction time), then again on the warm cache (must make 0 queries). Writes the records of
both runs (benchmarks/results/dect_baselines.jsonl and dect_baselines_rerun.jsonl) and the table
dect_baselines.md, rendered from the records alone (``--render`` re-renders it without running).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console

from edgetune.backends import FeatureCache, load_backend
from edgetune.bench import BenchConfig, MethodEntry, read_results, run_bench
from edgetune.bench.report import pct
from edgetune.methods import display_name

REFERENCE = MethodEntry("dect", "DecT (reference config: λ=1/shots, raw h, random fixed prototypes)",
                        {"lam": None, "normalize": "none", "prototypes": "random"})
INV_SHOTS = MethodEntry("dect", "DecT (edgetune, λ=1/shots)", {"lam": None})
METHODS = [MethodEntry(n, n) for n in ("zeroshot", "calibrated", "linear_probe", "dect")] + [INV_SHOTS, REFERENCE]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "agnews", "trec", "rte"])
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--test-size", type=int, default=400)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dect_baselines"))
    ap.add_argument("--render", action="store_true", help="only re-render the table from the stored records")
    args = ap.parse_args()
    out = Path(args.out)
    cold_path, warm_path = out.with_suffix(".jsonl"), out.with_name(out.name + "_rerun.jsonl")
    if not args.render:
        config = BenchConfig(name="dect_baselines", tasks=args.tasks, methods=METHODS, models=[args.model],
                             shots=[args.shots], seeds=args.seeds, test_size=args.test_size)
        with tempfile.TemporaryDirectory() as tmp:
            backend = load_backend(args.model, cache=FeatureCache(Path(tmp) / "features.sqlite"))
            for name, dest in (("cold", cold_path), ("warm", warm_path)):
                results = run_bench(config, Path(tmp) / name, console=Console(stderr=True),
                                    backends={args.model: backend})
                shutil.copyfile(results, dest)
    text = render(read_results(cold_path), read_results(warm_path))
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def render(cold: list[dict], warm: list[dict]) -> str:
    header = next(x for x in cold if x["type"] == "header")
    config = header["config"]
    labels = [m["label"] for m in config["methods"]]
    lines = [f"# DecT vs baselines · {', '.join(config['models'])} · {config['shots'][0]}-shot · seeds "
             f"{config['seeds']}", "", f"Machine: {json.dumps(header['machine'])}",
             f"Test sets: a seeded random subset of {config['test_size']} examples (seed 0; the full set where "
             "smaller), the same for every method. Accuracy in %, mean ± sample std over seeds.", "",
             "| task | " + " | ".join(display_name(m) for m in labels) + " | queries (cold → rerun) | "
             "extraction s | DecT train ms |", "|---" * (len(labels) + 4) + "|"]
    for task in config["tasks"]:
        cells = [c for c in cold if c["type"] == "cell" and c["task"] == task]
        row = []
        for m in labels:
            acc = np.array([c["accuracy"] for c in cells if c["method"] == m])
            row.append(pct(acc.mean(), acc.std(ddof=1) if len(acc) > 1 else 0.0))
        paid = [x for x in cold if x["type"] == "extraction" and x["task"] == task]
        again = sum(x["queries"] for x in warm if x["type"] == "extraction" and x["task"] == task)
        fit_ms = 1000 * np.mean([c["fit_seconds"] for c in cells if c["method"] == "dect"])
        lines.append(f"| {task} (n={cells[0]['n_test']}) | " + " | ".join(row) +
                     f" | {sum(x['queries'] for x in paid)} → {again} | {sum(x['seconds'] for x in paid):.1f} | "
                     f"{fit_ms:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
