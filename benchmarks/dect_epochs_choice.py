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

from dect_solver_choice import held_out_args, held_out_bench, paired

from edgetune.bench import MethodEntry

VARIANTS = {"dect_cv3": [10, 20, 30], "dect_cv4": [5, 10, 20, 30], "dect_cv5": [10, 20, 30, 60, 100]}


def main() -> None:
    args = held_out_args("dect_epochs_choice")
    methods = [MethodEntry("dect", "dect", {"epochs": 30})]
    methods += [MethodEntry("dect", k, {"epochs": v}) for k, v in VARIANTS.items()]
    path = held_out_bench("dect_epochs_choice", methods, args)
    for variant in VARIANTS:
        paired(path, args, "dect", variant)


if __name__ == "__main__":
    main()
