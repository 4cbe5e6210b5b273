"""DecT's ``solver`` chosen on validation data held out of the train pools (never a test set).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/dect_solver_choice.py [--tasks sst2 agnews trec rte]
            [--seeds 0 1 2 3 4] [--val-shots 50]

For each task ``--val-shots`` per class are held out of the train pool (as ``input_edge_recipe.py`` does);
the 16-shot samples are drawn from the rest, and DecT with ``solver="full"`` and ``solver="span"`` is scored
on the held-out split, through edgetune's runner (one extraction shared by both). Writes
benchmarks/results/dect_solver_choice/ (records and report) and prints the paired differences.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from input_edge_recipe import held_out_task
from rich.console import Console

from edgetune.bench import BenchConfig, MethodEntry, read_results, run_bench

HERE = Path(__file__).resolve().parent


def held_out_args(name: str) -> argparse.Namespace:
    """The command line these held-out-validation scripts share (output: ``results/<name>``)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "agnews", "trec", "rte"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--val-shots", type=int, default=50)
    ap.add_argument("--out", default=str(HERE / "results" / name))
    return ap.parse_args()


def held_out_bench(name: str, methods: list[MethodEntry], args: argparse.Namespace) -> Path:
    """Run ``methods`` on 16-shot samples of each task's train pool minus ``--val-shots`` per class, scored on
    those held-out examples (the validation split); the results file's path."""
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [held_out_task(t, args.val_shots, Path(tmp) / t) for t in args.tasks]
        config = BenchConfig(name=name, tasks=tasks, shots=[16], seeds=args.seeds, test_size=None, methods=methods)
        return run_bench(config, args.out, console=Console(stderr=True))


def main() -> None:
    args = held_out_args("dect_solver_choice")
    # the settings as measured: 30 epochs (the default then); "dect" was the full solver (the default then)
    path = held_out_bench("dect_solver_choice", [
        MethodEntry("dect", "dect", {"solver": "full", "epochs": 30}),
        MethodEntry("dect", "dect_span", {"solver": "span", "epochs": 30})], args)
    paired(path, args, "dect", "dect_span")


def paired(path: Path, args: argparse.Namespace, base: str, other: str) -> None:
    """Print each task's accuracy (and fit time) of ``base`` and ``other``, and their paired difference per cell."""
    cells = {(c["task_name"], c["seed"], c["method"]): c for c in read_results(path) if c.get("type") == "cell"}
    diffs = []
    for task in args.tasks:
        a = [cells[(f"{task}-val", s, base)]["accuracy"] for s in args.seeds]
        b = [cells[(f"{task}-val", s, other)]["accuracy"] for s in args.seeds]
        secs = [cells[(f"{task}-val", s, other)]["fit_seconds"] for s in args.seeds]
        diffs += [y - x for x, y in zip(a, b, strict=True)]
        print(f"{task}: {base} {100 * np.mean(a):.1f} ± {100 * np.std(a, ddof=1):.1f}  {other} "
              f"{100 * np.mean(b):.1f} ± {100 * np.std(b, ddof=1):.1f} (fit {np.median(secs):.2f} s)")
    d = 100 * np.array(diffs)
    print(f"{other} − {base} per cell: {d.mean():+.2f} ± {d.std(ddof=1):.2f} points (n={len(d)}, "
          f"standard error {d.std(ddof=1) / np.sqrt(len(d)):.2f})")


if __name__ == "__main__":
    main()
