"""Wall time of one bench grid run serially, on ``--workers 2`` processes and as Ray tasks (issue 29, part 4).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/grid_workers.py [--seeds 0 1 2 3] [--test-size 100]

The grid: SmolLM2-135M (the format ``dtype="auto"`` picks), sst2 and trec, 16 shots, ``--seeds``, ``--test-size``
test examples, the output-edge methods zero-shot, calibrated, linear probe and DecT, plus prompt tuning for 20
steps (one gradient method, so training is part of the work). Each way runs in a fresh subprocess with a fresh
feature cache (every prompt paid for), so the times include loading the model in each worker. Records of the
three ways are compared cell by cell (output-edge cells must be equal). Writes
benchmarks/results/grid_workers.{json,md}. Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--test-size", type=int, default=100)
    args = ap.parse_args()
    from edgetune.bench.records import machine_info, read_results

    tmp = Path(tempfile.mkdtemp(prefix="grid-workers-"))
    rows, cells = [], {}
    for label, extra in (("serial", []), ("--workers 2", ["--workers", "2"]), ("--ray (local, 2 CPUs)", ["--ray"])):
        out = tmp / label.split()[0].strip("-")
        config = {"name": "grid_workers", "models": ["smollm2-135m"], "tasks": ["sst2", "trec"], "shots": [16],
                  "seeds": args.seeds, "test_size": args.test_size, "output": str(out),
                  "methods": ["zeroshot", "calibrated", "linear_probe", "dect",
                              {"name": "pt", "params": {"steps": 20, "eval_every": 10}}]}
        path = tmp / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "edgetune.cli", "bench", str(path), "--no-progress", "--no-plots",
               "--cache", str(tmp / f"{out.name}.sqlite"), *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        got = {(c["task"], c["seed"], c["method"]): c for c in read_results(out / "results.jsonl")
               if c["type"] == "cell"}
        cells[label] = got
        rows.append({"way": label, "seconds": seconds, "cells": len(got)})
        print(f"{label}: {seconds:.1f} s, {len(got)} cells", flush=True)
    serial = cells["serial"]
    for r in rows:
        other = cells[r["way"]]
        r["speedup"] = rows[0]["seconds"] / r["seconds"]
        r["output_edge_equal"] = all(other[k]["accuracy"] == c["accuracy"] for k, c in serial.items()
                                     if c["edge"] == "output")
        r["max_input_edge_accuracy_gap"] = max(abs(other[k]["accuracy"] - c["accuracy"])
                                               for k, c in serial.items() if c["edge"] != "output")
    result = {"machine": machine_info(), "cpus": os.cpu_count(), "command": "python benchmarks/perf/grid_workers.py "
              f"--seeds {' '.join(map(str, args.seeds))} --test-size {args.test_size}", "rows": rows}
    (HERE / "results" / "grid_workers.json").write_text(json.dumps(result, indent=2))
    md = [f"# One bench grid serially, on 2 worker processes and as Ray tasks · {os.cpu_count()} CPUs", "",
          f"`{result['command']}`; SmolLM2-135M, sst2 + trec, 16 shots, seeds {args.seeds}, {args.test_size} test "
          "examples, zero-shot / calibrated / linear probe / DecT / prompt tuning (20 steps); fresh cache each way.",
          "", "| way | wall s | speed-up | cells | output-edge cells equal to serial | largest input-edge accuracy "
          "gap |",
          "|---|---:|---:|---:|---|---:|"]
    md += [f"| {r['way']} | {r['seconds']:.1f} | {r['speedup']:.2f}× | {r['cells']} | {r['output_edge_equal']} | "
           f"{r['max_input_edge_accuracy_gap']:.3f} |" for r in rows]
    (HERE / "results" / "grid_workers.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
