"""How long DecT's fit takes (λ search included), quiet and beside a busy process.

Usage:  python benchmarks/perf/dect_fit_speed.py [--repeats 7]

Features of the shape DecT sees on 16-shot sst2 / agnews / trec with SmolLM2 (n = 16 × classes prompts,
576-d hidden states; random numbers: the fit's cost depends on the shapes only), default parameters
(``lam="cv"``: 4 folds × 6 λ values trained as one batch of 24 decoders, then the final one; ``epochs``: 10, 20
or 30 chosen by the same cross-validation, snapshots of one run; also a fixed 30 for comparison), both solvers
(``solver="full"``: the projection W is learned whole, the reference's way; ``"span"``: only its part in the
span of the training inputs), torch with 2 threads and with 1, each timed ``--repeats`` times:

- *quiet*: nothing else of ours running;
- *busy*: beside one process that keeps a core busy with matrix products (as a user's notebook or a second
  job would).

Writes benchmarks/results/dect_fit_speed.{json,md}: median and range of seconds per fit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
SHAPES = {"sst2": 2, "agnews": 4, "trec": 6}
# (solver, epochs): both solvers at the default length choice, and the span solver at a fixed 30 epochs (the
# default before the length was cross-validated) for the cost of the choice, in the same run
VARIANTS: list[tuple[str, int | None]] = [("full", None), ("span", None), ("span", 30)]


def busy(stop) -> None:  # a process that keeps one core busy
    import numpy as np

    a = np.random.default_rng(0).normal(size=(400, 400))
    while not stop.is_set():
        a = np.tanh(a @ a * 1e-3)


def fit_times(classes: int, solver: str, threads: int, repeats: int, epochs: int | None = None) -> list[float]:
    import torch

    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_methods import FakeBackend

    from edgetune.backends import Features
    from edgetune.methods import DecT

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    n = 16 * classes
    y = np.repeat(np.arange(classes), 16)
    train = Features(rng.normal(size=(n, classes)).astype(np.float32), rng.normal(size=(n, 576)).astype(np.float32))
    cf = Features(np.zeros((2, classes), np.float32), np.zeros((2, 576), np.float32))
    labels = tuple(f"c{i}" for i in range(classes))
    out = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        DecT(FakeBackend(), solver=solver, seed=i, threads=threads,
             **({} if epochs is None else {"epochs": epochs})).fit_prepared(
            train, y, cf, labels=labels, template="{text} {mask}", words=list(labels))
        if i:  # the first fit warms up
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rows = []
    for load in ("quiet", "busy"):
        stop = mp.Event()
        side = mp.Process(target=busy, args=(stop,)) if load == "busy" else None
        if side:
            side.start()
            time.sleep(1.0)
        try:
            for task, classes in SHAPES.items():
                for solver, epochs in VARIANTS:
                    for threads in (2, 1):
                        t = fit_times(classes, solver, threads, args.repeats, epochs)
                        rows.append({"load": load, "task": task, "classes": classes, "solver": solver,
                                     "epochs": epochs or "default", "threads": threads, "median": float(np.median(t)),
                                     "min": min(t), "max": max(t)})
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            if side:
                stop.set()
                side.join()
    from edgetune.bench.records import machine_info

    stem = HERE / "results" / "dect_fit_speed"
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine_info(), "repeats": args.repeats,
                                                     "rows": rows}, indent=2), encoding="utf-8")
    lines = ["# DecT fit time (λ search included) · `python benchmarks/perf/dect_fit_speed.py`", "",
             f"Machine: {json.dumps(machine_info())}", "",
             "Seconds per fit, median (min–max) of " + str(args.repeats) + " fits after one warm-up.", "",
             "| load | task shape | solver | epochs | 2 threads | 1 thread (default) |", "|---|---|---|---|---:|---:|"]
    for load in ("quiet", "busy"):
        for task in SHAPES:
            for solver, epochs in VARIANTS:
                cells = []
                for threads in (2, 1):
                    r = next(x for x in rows if (x["load"], x["task"], x["solver"], x["epochs"], x["threads"]) ==
                             (load, task, solver, epochs or "default", threads))
                    cells.append(f"{r['median']:.3f} ({r['min']:.3f}–{r['max']:.3f})")
                length = "10/20/30 by CV (default)" if epochs is None else str(epochs)
                lines.append(f"| {load} | {task} ({SHAPES[task] * 16} × 576) | {solver} | {length} | {cells[0]} | "
                             f"{cells[1]} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
