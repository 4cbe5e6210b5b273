"""Seconds per black-box call (one candidate prompt over the k-shot set) for BBT and BBTv2 on this machine,
and what sharing each candidate's prefix saves.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/black_box_call_speed.py [--task sst2] [--repeats 3]

Scores one generation (population 20) of random candidates on the 16-shot sample (seed 0) of ``--task`` with
SmolLM2, 50 prompt tokens, candidates scored together (``max_rows`` 1,024): BBT with each candidate's keys and
values computed once and shared by its rows (now) and with the prompt prepended to every row
(``share_prefix=False``, as before), alternating, in one process — so the ratio holds on a busy machine; and
BBTv2 (its deep prompt always goes through the shared prefix). Writes
benchmarks/results/black_box_call_speed.json: median seconds per call of each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    from edgetune.backends import FeatureCache, load_backend
    from edgetune.bench.records import machine_info
    from edgetune.data import load_task
    from edgetune.methods import BBT, BBTv2

    backend = load_backend("smollm2-135m", cache=FeatureCache(None), progress=False)
    train = load_task(args.task).sample(16, 0)
    rng = np.random.default_rng(0)
    timings: dict[str, list[float]] = {"bbt shared prefix": [], "bbt prefix per row": [], "bbtv2": []}
    methods = {}
    for name, cls, popsize in (("bbt", BBT, 20), ("bbtv2", BBTv2, 2)):
        m = cls(backend, budget=popsize * (30 if cls is BBTv2 else 1), popsize=popsize, eval_every=10**6,
                progress=False)
        m.fit(train)  # the cheapest search: sets up the model, the projections and the batches
        methods[name] = m
    zs = {name: [rng.normal(size=m.search_dim) for _ in range(20)] for name, m in methods.items()}
    for _ in range(args.repeats):
        for label, name, shared in (("bbt shared prefix", "bbt", True), ("bbt prefix per row", "bbt", False),
                                    ("bbtv2", "bbtv2", True)):
            m = methods[name]
            m.module_.share_prefix = shared
            start = time.perf_counter()
            m.losses(zs[name])
            timings[label].append((time.perf_counter() - start) / 20)
    out = {"task": args.task, "n_train": len(train), "threads": torch.get_num_threads(), "machine": machine_info(),
           "seconds_per_call": {k: {"median": float(np.median(v)), "all": v} for k, v in timings.items()}}
    out["bbt_speedup"] = out["seconds_per_call"]["bbt prefix per row"]["median"] / \
        out["seconds_per_call"]["bbt shared prefix"]["median"]
    path = HERE / "results" / "black_box_call_speed.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: round(v["median"], 3) for k, v in out["seconds_per_call"].items()}),
          f"BBT speed-up {out['bbt_speedup']:.2f}x")


if __name__ == "__main__":
    main()
