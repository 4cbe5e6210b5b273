"""DecT's training length: fixed (30 epochs, the paper's) or chosen by cross-validation on the training sample.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/dect_epochs_choice.py [--tasks sst2 agnews trec rte]
            [--seeds 0 1 2 3 4] [--val-shots 50]

As ``dect_solver_choice.py``: ``--val-shots`` per class are held out of each train pool as the validation split
(never a test set) and the 16-shot samples are drawn from the rest; DecT with ``epochs=30`` and with
``epochs=[10, 20, 30]`` / ``[5, 10, 20, 30]`` / ``[10, 20, 30, 60, 100]`` (the length picked with λ by
the same cross-validation on the 16-shot sample) is scored on it, through edgetune's runner (one extraction
shared by all; copy ``dect_solver_choice/features.sqlite`` into the output folder to reuse its queries). Writes
benchmarks/results/dect_epochs_choice/ and prints each variant's paired difference to the fixed length.
"""

from __future__ import annotations

import numpy as np
from dect_solver_choice import held_out_args, held_out_bench

from edgetune.bench import MethodEntry, read_results

VARIANTS = {"dect_cv3": [10, 20, 30], "dect_cv4": [5, 10, 20, 30], "dect_cv5": [10, 20, 30, 60, 100]}


def main() -> None:
    args = held_out_args("dect_epochs_choice")
    methods = [MethodEntry("dect", "dect", {"epochs": 30})]
    methods += [MethodEntry("dect", k, {"epochs": v}) for k, v in VARIANTS.items()]
    path = held_out_bench("dect_epochs_choice", methods, args)
    records = [c for c in read_results(path) if c.get("type") == "cell"]
    cells = {(c["task_name"], c["seed"], c["method"]): c for c in records}
    for variant in VARIANTS:
        diffs = []
        for task in args.tasks:
            fixed = [cells[(f"{task}-val", s, "dect")]["accuracy"] for s in args.seeds]
            cv = [cells[(f"{task}-val", s, variant)]["accuracy"] for s in args.seeds]
            diffs += [b - a for a, b in zip(fixed, cv, strict=True)]
            secs = [cells[(f"{task}-val", s, variant)]["fit_seconds"] for s in args.seeds]
            print(f"{variant} {task}: fixed 30 {100 * np.mean(fixed):.1f} ± {100 * np.std(fixed, ddof=1):.1f}  "
                  f"cv {100 * np.mean(cv):.1f} ± {100 * np.std(cv, ddof=1):.1f}  (fit {np.median(secs):.2f} s)")
        d = 100 * np.array(diffs)
        print(f"{variant} − fixed per cell: {d.mean():+.2f} ± {d.std(ddof=1):.2f} points (n={len(d)}, "
              f"standard error {d.std(ddof=1) / np.sqrt(len(d)):.2f})")


if __name__ == "__main__":
    main()
