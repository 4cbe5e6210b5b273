"""Peak training memory of every input-edge method, each in a fresh process.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/input_edge_memory.py [--task sst2] [--steps 10]
            [--dtype float32] [--methods bbt finetune finetune:weights=model ...]

Each method trains on the 16-shot sample (seed 0) of ``--task`` with SmolLM2 for ``--steps`` steps of batch 8
(dev checks every 5 steps; black-box methods at the input-edge family bench's budgets) in its own process, so
nothing an earlier run allocated is counted or hidden. Peak = the most C-heap memory in use above what was in
use after the model was loaded (:class:`edgetune.bench.runner.PeakMemory`; glibc ``mallinfo2``), plus the
process's peak resident set for reference. The loaded model itself (≈ 0.55 GB fp32) is not in the peak.
``--dtype`` loads the model in that format; a method given as ``name:key=value`` gets those parameters.
Writes benchmarks/results/input_edge_memory.{json,md} (with other options: input_edge_memory_<task>_<dtype>.*).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
GRADIENT = ["finetune", "sift", "lora", "pt", "dept", "adept", "accept", "lamp", "apt"]
BLACK_BOX = {"bbt": {"budget": 40, "popsize": 20}, "bbtv2": {"budget": 120, "popsize": 4}}


def one(spec: str, task: str, steps: int, dtype: str) -> dict:
    import resource

    from edgetune.backends import FeatureCache, load_backend
    from edgetune.bench.runner import PeakMemory
    from edgetune.data import load_task
    from edgetune.methods import get_method
    from edgetune.methods.core.config import value_from_text

    method, _, extra = spec.partition(":")
    given = {k: value_from_text(v) for k, v in (kv.split("=", 1) for kv in extra.split(",") if kv)}
    backend = load_backend("smollm2-135m", cache=FeatureCache(None), progress=False, dtype=dtype)
    backend.torch_model()
    train = load_task(task).sample(16, 0)
    params = {**BLACK_BOX.get(method, {"steps": steps, "eval_every": 5}), **given}
    m = get_method(method)(backend, progress=False, **params)
    with PeakMemory() as memory:
        m.fit(train)
    return {"method": spec, "dtype": dtype, "task": task, "params": params, "peak_mb": memory.peak_mb,
            "measure": memory.measure,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trainable_params": m.costs().trainable_params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--methods", nargs="+", default=GRADIENT + list(BLACK_BOX))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.task, args.steps, args.dtype)))
        return
    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--one", method, "--task", args.task, "--steps", str(args.steps),
               "--dtype", args.dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{method}: {rows[-1]['peak_mb']:.0f} MB", flush=True)
    from edgetune.bench.records import machine_info

    default = args.task == "sst2" and args.dtype == "float32" and args.methods == GRADIENT + list(BLACK_BOX)
    out = HERE / "results" / ("input_edge_memory" if default else f"input_edge_memory_{args.task}_{args.dtype}")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine_info(), "command": sys.argv[1:],
                                                    "rows": rows}, indent=2))
    md = [f"# Peak training memory · smollm2-135m ({args.dtype}) · {args.task} 16-shot seed 0 · {args.steps} steps "
          "of 8 "
          "(black-box: the family bench's budgets)", "",
          "Each method in a fresh process; peak = C-heap memory in use above the loaded model (glibc mallinfo2), "
          "max RSS = the whole process's peak resident set (model included).", "",
          "| method | trainable params | peak MB above the model | max RSS MB |", "|---|---:|---:|---:|"]
    md += [f"| {r['method']} | {r['trainable_params']:,} | {r['peak_mb']:,.0f} | {r['max_rss_mb']:,.0f} |"
           for r in sorted(rows, key=lambda r: r["peak_mb"])]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
