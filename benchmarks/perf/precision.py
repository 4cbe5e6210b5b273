"""Throughput in float32 and bfloat16, per thread count, quiet and beside a busy process (issue 29).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/precision.py [--n 128] [--device cpu]

For each format (float32, bfloat16) × torch thread count (1, and every core) × condition (quiet; beside a busy
process: one other process running single-threaded float32 matrix products on one core, as a shared machine has):

- ``matmul``: GFLOP/s of a 2048² matrix product (best of 3 after a warm-up), beside the machine's peak where this
  script knows the CPU (FLOP per cycle per core × cores × the clock /proc/cpuinfo reports — under a hypervisor that
  is the base clock and cores boost above it, so a ratio above 100 % says the peak is understated; a GPU: the
  vendor's dense figure, given with --peak-fp32/--peak-bf16);
- ``extract``: SmolLM2-135M feature extraction through edgetune's LocalBackend on --n sst2 test prompts (batch 32,
  an in-memory cache so every prompt is a query), prompts/s, median of --repeats after a warm-up, at 1 thread, at
  every core and at ``auto`` (chosen batch by batch; it learns during the warm-up);
- ``adept``: seconds per ADePT training step (16-shot sst2, the method's defaults), from two fits of 2 and 2 +
  --steps steps (the difference cancels set-up, the start and end dev checks), median of 3, the formats
  interleaved, quiet, at every core.

Writes benchmarks/results/precision_throughput.json (with the machine) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from edgetune.backends import FeatureCache, LocalBackend
from edgetune.backends.precision import ThreadChooser, _cpuinfo, matmul_rate
from edgetune.bench.records import machine_info
from edgetune.data import Template, load_task
from edgetune.methods import ADePT

RESULTS = Path(__file__).resolve().parents[1] / "results"
BUSY = ("import numpy as np, time\n"
        "a = np.random.rand(512, 512).astype(np.float32)\n"
        "end = time.time() + 3600\n"
        "while time.time() < end:\n"
        "    a @ a\n")

#: dense FLOP per cycle per core of the CPUs this project meets: (fp32 with FMA, bf16 dot products)
CPU_FLOPS = {
    "zen4": (32, 64),  # AMD family 25 models 0x10-0x1f, 0x60-0x7f, 0xa0-0xaf: two 256-bit FMA pipes; VDPBF16PS 2x
    "amx": (64, 1024),  # Intel Sapphire Rapids and later: two 512-bit FMA units; AMX-BF16 tiles 1024/cycle
}


def cpu_peaks() -> dict[str, float] | None:
    """Peak GFLOP/s (fp32, bf16) of this CPU, all cores, at the clock /proc/cpuinfo reports; None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = _cpuinfo()[1] or set()
    family, model = int(fields.get("cpu family", 0)), int(fields.get("model", 0))
    kind = "amx" if "amx_bf16" in flags else (
        "zen4" if family == 25 and "avx512_bf16" in flags and (0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F
                                                               or 0xA0 <= model <= 0xAF) else None)
    if kind is None or "cpu MHz" not in fields:
        return None
    ghz, cores = float(fields["cpu MHz"]) / 1000, os.cpu_count() or 1
    fp32, bf16 = CPU_FLOPS[kind]
    return {"kind": kind, "ghz": ghz, "cores": cores, "fp32": fp32 * cores * ghz, "bf16": bf16 * cores * ghz}


def extract_rate(backend: LocalBackend, data, template: Template, words, repeats: int) -> float:
    def once() -> float:
        backend.cache = FeatureCache(None)
        t = time.perf_counter()
        backend.features(data, template, words)
        return time.perf_counter() - t

    once()  # warm-up
    return len(data) / statistics.median(once() for _ in range(repeats))


def adept_steps(backends: dict[str, LocalBackend], train, steps: int, repeats: int) -> dict[str, float]:
    """Median over ``repeats`` (formats interleaved) of (fit of 2 + steps steps − fit of 2 steps) / steps."""
    def fit(backend: LocalBackend, n: int) -> float:
        t = time.perf_counter()
        ADePT(backend, steps=n, eval_every=10_000, progress=False).fit(train)
        return time.perf_counter() - t

    seen: dict[str, list[float]] = {name: [] for name in backends}
    for backend in backends.values():
        fit(backend, 2)  # warm-up
    for _ in range(repeats):
        for name, backend in backends.items():
            seen[name].append((fit(backend, 2 + steps) - fit(backend, 2)) / steps)
    return {name: round(statistics.median(v), 3) for name, v in seen.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--peak-fp32", type=float, default=None, help="GFLOP/s, for a GPU")
    ap.add_argument("--peak-bf16", type=float, default=None, help="GFLOP/s, for a GPU")
    ap.add_argument("--out", default=str(RESULTS / "precision_throughput.json"))
    args = ap.parse_args()

    task = load_task("sst2")
    data = task.load("test", limit=args.n)
    template = Template(task.template)
    train = task.sample(16, seed=0)
    cores = os.cpu_count() or 1
    gpu = args.device != "cpu"
    threads: list[int | str] = [torch.get_num_threads()] if gpu else [*sorted({1, cores}), "auto"]
    conditions = ["quiet"] if gpu else ["quiet", "busy"]
    peaks = ({"fp32": args.peak_fp32, "bf16": args.peak_bf16} if gpu else cpu_peaks()) or {}
    backends = {name: LocalBackend.load(args.model, progress=False, batch_size=32, dtype=name, device=args.device)
                for name in ("float32", "bfloat16")}
    rows = []
    for condition in conditions:
        busy = None
        if condition == "busy":
            busy = subprocess.Popen([sys.executable, "-c", BUSY],
                                    env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
            time.sleep(1.0)
        try:
            for n_threads in threads:
                torch.set_num_threads(cores if n_threads == "auto" else int(n_threads))
                for name, backend in backends.items():
                    short = "fp32" if name == "float32" else "bf16"
                    backend.threads = n_threads
                    backend.thread_chooser = ThreadChooser() if n_threads == "auto" else None
                    gflops = matmul_rate(getattr(torch, name), 2048, device=args.device)
                    rate = extract_rate(backend, data, template, task.words, args.repeats)
                    peak = peaks.get(short)
                    row = {"condition": condition, "threads": n_threads, "dtype": name,
                           "matmul_gflops": round(gflops, 1), "peak_gflops": round(peak, 1) if peak else None,
                           "of_peak": round(gflops / peak, 3) if peak else None, "extract_prompts_s": round(rate, 2),
                           **({"auto_chose": backend.thread_chooser.chosen} if backend.thread_chooser else {})}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    torch.set_num_threads(cores)
    for backend in backends.values():
        backend.threads, backend.thread_chooser = None, None
    steps = adept_steps(backends, train, args.steps, repeats=3)
    print(f"adept s/step: {steps}", flush=True)
    out = {"machine": machine_info(), "device": args.device, "cpu": _cpuinfo()[0], "peaks": peaks, "n": args.n,
           "rows": rows, "adept_s_per_step": steps, "adept_threads": cores,
           "command": "python benchmarks/perf/precision.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("| condition | threads | dtype | matmul GFLOP/s | of peak | extraction prompts/s |")
    for r in rows:
        of = f"{100 * r['of_peak']:.0f} %" if r["of_peak"] else "?"
        print(f"| {r['condition']} | {r['threads']} | {r['dtype']} | {r['matmul_gflops']} | {of} | "
              f"{r['extract_prompts_s']} |")


if __name__ == "__main__":
    main()
