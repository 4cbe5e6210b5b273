"""The number format and thread count an in-process model runs with on this machine.

``dtype="auto"`` (the default of every in-process backend) means:

- on a CUDA GPU, bfloat16 where the GPU supports it (Ampere and later), else float32;
- on a CPU, bfloat16 where a short probe measures bfloat16 matrix products at least
  :data:`BF16_MIN_SPEEDUP` times as fast as float32 ones — CPUs with AMX or AVX-512-BF16 units; on others torch
  emulates bfloat16 and it is slower — else float32. The probe (two matrix products per format, well under a
  second) runs once per machine: its answer is kept in ``<cache dir>/hardware.json``, keyed by the CPU's model name,
  its bfloat16 flags, the torch version and the thread count. On Linux a CPU that lists no bfloat16 flag is
  answered float32 without probing.

A model loaded in bfloat16 or float16 extracts features in that format; input-edge training keeps its trainable
parameters and optimiser state in float32 and runs the frozen body under ``torch.autocast``
(:func:`autocast_for`). Why the probe's threshold and the thread default are what they are:
benchmarks/results/README.md, 'Precision and threads'.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from ..paths import cache_dir
from .models import DTYPES

#: bfloat16 is chosen on a CPU only when its measured matrix products are at least this many times faster
BF16_MIN_SPEEDUP = 1.5
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo() -> tuple[str, set[str] | None]:
    """The CPU's model name and its flags (``None`` where /proc/cpuinfo cannot be read: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), None
    name, flags = platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == platform.machine():
            name = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return name, flags


def cpu_bf16_flags() -> list[str] | None:
    """The CPU's bfloat16 units named in its flags (``[]``: none; ``None``: flags unknown on this system)."""
    flags = _cpuinfo()[1]
    return None if flags is None else [f for f in _BF16_FLAGS if f in flags]


def matmul_rate(dtype: torch.dtype, size: int = 1024, repeats: int = 3, device: str = "cpu") -> float:
    """GFLOP/s of a ``size``² matrix product in ``dtype`` (best of ``repeats`` after one warm-up)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def _probe_key() -> str:
    name, _ = _cpuinfo()
    return f"{name}|{','.join(cpu_bf16_flags() or [])}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def cpu_prefers_bf16(cache_root: str | os.PathLike | None = None) -> bool:
    """Whether bfloat16 matrix products are measurably faster than float32 ones on this CPU (probed once, cached)."""
    if cpu_bf16_flags() == []:
        return False
    path = cache_dir(cache_root) / "hardware.json"
    key = _probe_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    entry = known.get(key)
    if not (isinstance(entry, dict) and isinstance(entry.get("bf16_speedup"), (int, float))):
        fp32, bf16 = matmul_rate(torch.float32, 512), matmul_rate(torch.bfloat16, 512)
        entry = {"fp32_gflops": round(fp32, 1), "bf16_gflops": round(bf16, 1), "bf16_speedup": round(bf16 / fp32, 2),
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        known[key] = entry
        try:  # a cache of measurements, merged and replaced atomically; losing it only costs a re-probe
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass
    return float(entry["bf16_speedup"]) >= BF16_MIN_SPEEDUP


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device,
                  cache_root: str | os.PathLike | None = None) -> torch.dtype:
    """The torch dtype ``dtype`` names on ``device`` (``"auto"``/``None``: see the module docstring)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        if device.type == "cpu":
            return torch.bfloat16 if cpu_prefers_bf16(cache_root) else torch.float32
        return torch.float32
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    chosen = getattr(torch, dtype)
    if chosen == torch.float16 and device.type == "cpu":
        raise ModelError("float16 on a CPU is emulated and slow; use --dtype bfloat16 or float32 there "
                         "(float16 is for GPUs without bfloat16)")
    return chosen


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of a model's frozen weights (its first floating parameter that takes no gradient; else its first)."""
    first = None
    for p in model.parameters():
        if p.is_floating_point():
            if not p.requires_grad:
                return p.dtype
            first = first or p.dtype
    return first or torch.float32


def autocast_for(model: torch.nn.Module) -> Any:
    """``torch.autocast`` to the frozen body's dtype where that is half precision (a no-op context for float32):
    trainable float32 parameters meet the half-precision body inside it."""
    dtype = model_dtype(model)
    if dtype == torch.float32:
        return nullcontext()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.autocast(device.type, dtype=dtype)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (``None``: as set), restoring the setting after (small-tensor work
    and work beside a busy process are often faster on fewer threads than torch's default of one per core)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ThreadChooser:
    """``threads="auto"``: the thread count chosen from the work itself, batch by batch.

    The first batches run once at each candidate (every core, then one thread); the rest run at the count that read
    the most tokens per second, and every ``recheck`` batches the other candidates get one batch again, so a
    machine that becomes busy (or quiet) mid-run is followed. No batch is run twice: the trials are real work.
    Measured on a 2-core machine (benchmarks/results/README.md, 'Precision and threads'): quiet, two threads read
    1.5-1.8x the prompts of one; beside one busy process, one thread reads 1.7-1.8x the prompts of two.
    """

    def __init__(self, cores: int | None = None, recheck: int = 32) -> None:
        cores = cores or torch.get_num_threads()  # the share of the cores this process was given
        self.candidates = list(dict.fromkeys([cores, max(1, cores // 2), 1]))
        self.recheck = recheck
        self.rates: dict[int, float] = {}
        self.batches = 0

    def next(self) -> int:
        """The thread count for the next batch."""
        untried = [n for n in self.candidates if n not in self.rates]
        if untried:
            return untried[0]
        best = max(self.rates, key=self.rates.__getitem__)
        if self.batches % self.recheck == 0:
            others = [n for n in self.candidates if n != best]
            return others[(self.batches // self.recheck) % len(others)] if others else best
        return best

    def record(self, threads: int, tokens: int, seconds: float) -> None:
        """One batch's work (padded tokens) and wall time at ``threads``."""
        self.batches += 1
        if seconds > 0:
            self.rates[threads] = tokens / seconds

    @property
    def chosen(self) -> int | None:
        """The count in use now (``None`` before every candidate has run once)."""
        if any(n not in self.rates for n in self.candidates):
            return None
        return max(self.rates, key=self.rates.__getitem__)
