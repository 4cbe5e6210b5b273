"""A new user's first five minutes, timed: how fast the CLI answers, and how long the README's first run takes.

Usage:  python benchmarks/perf/first_five_minutes.py [--repeats 5] [--skip-first-run]

Each command runs as a fresh process (as a user types it), ``--repeats`` times; the median and the slowest
are reported. The first run is the README's first command, ``edgetune run dect --task sst2 --shots 16``,
with an empty cache folder (so the packaged GGUF is converted, as on a fresh install) and no
``EDGETUNE_DATA_DIR`` (the task data installed with edgetune): wall time to its exit, and to the first
result table. Time it with nothing else running. Writes benchmarks/results/first_five_minutes.{json,md}.
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

from edgetune.bench.records import machine_info

RESULTS = Path(__file__).resolve().parents[1] / "results"
EDGETUNE = [sys.executable, "-m", "edgetune.cli"]
QUICK = {"edgetune --help": ["--help"], "edgetune tasks": ["tasks"], "edgetune models": ["models"],
         "edgetune run --help": ["run", "--help"],
         "an argument error (edgetune run dect --shots two)": ["run", "dect", "--shots", "two"],
         "an unknown method (edgetune run dcet)": ["run", "dcet"]}
FIRST = ["run", "dect", "--task", "sst2", "--shots", "16"]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, float | None, str]:
    """Seconds to exit, exit code, seconds to the first result table (None if none), output tail."""
    start = time.perf_counter()
    proc = subprocess.Popen([*EDGETUNE, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    first = None
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if first is None and "mean ± std" in line:
            first = time.perf_counter() - start
    code = proc.wait()
    return time.perf_counter() - start, code, first, "".join(lines[-30:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-first-run", action="store_true")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "EDGETUNE_DATA_DIR"}
    rows = []
    for label, argv in QUICK.items():
        times, codes = [], set()
        for _ in range(args.repeats):
            t, code, _, _ = timed(argv, env)
            times.append(t)
            codes.add(code)
        times.sort()
        rows.append({"command": label, "median_s": times[len(times) // 2], "max_s": times[-1], "exit": sorted(codes)})
        print(json.dumps(rows[-1]), flush=True)
    first = None
    if not args.skip_first_run:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            t, code, table, tail = timed([*FIRST, "-o", out], {**env, "EDGETUNE_CACHE_DIR": cache})
            first = {"command": "edgetune " + " ".join(FIRST), "exit_s": t, "exit": code, "first_table_s": table,
                     "output_tail": tail}
            print(json.dumps({k: v for k, v in first.items() if k != "output_tail"}), flush=True)
    meta = {"machine": machine_info(), "repeats": args.repeats, "rows": rows, "first_run": first}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "first_five_minutes.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    md = ["# A new user's first five minutes", "", f"Machine: {json.dumps(meta['machine'])}", "",
          f"Each command is a fresh process, {args.repeats} times (`python benchmarks/perf/first_five_minutes.py`). "
          "Target: ≤ 1.5 s.", "", "| command | median s | slowest s | exit code |", "|---|---:|---:|---:|"]
    md += [f"| `{r['command']}` | {r['median_s']:.2f} | {r['max_s']:.2f} | {', '.join(map(str, r['exit']))} |"
           for r in rows]
    if first:
        md += ["", f"**The README's first run** (`{first['command']}`, empty cache: the GGUF is converted; task data "
               f"installed with edgetune): first result table after {first['first_table_s'] or float('nan'):.0f} s, "
               f"exit after {first['exit_s']:.0f} s (exit code {first['exit']}). Target: ~90 s.", "", "```",
               first["output_tail"].rstrip(), "```"]
    (RESULTS / "first_five_minutes.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
