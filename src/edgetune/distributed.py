"""Runs under ``torchrun`` / ``accelerate launch``: which process this is, and the few collectives edgetune needs.

Every process runs the same program on the same data in the same order (the grid, the samples, the fits). Three
things differ by rank:

- **extraction** is sharded: each process reads every ``size``-th prompt not yet cached, and the rows are
  gathered so that every process holds them all (:meth:`~edgetune.backends.base.Backend.features`);
- **training** is data-parallel: the AdamW trainer runs under HF Accelerate, which wraps the trained module in
  DistributedDataParallel, and each process takes its share of every batch (``methods.core.trainers``);
- **writing** is rank 0's alone: records, reports, saved models and the feature cache on disk. The others keep
  their lines in memory, so every process takes the same decisions (resume, skips) from the same state.

Outside a launcher (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) all of this is a no-op and nothing distributed is
imported. Written here because Accelerate's ``PartialState`` gives the ranks and ``gather_object`` but no
"rank-0 writes, everyone agrees" contract for files.
"""

from __future__ import annotations

import os
from typing import Any


def world() -> tuple[int, int]:
    """``(rank, size)`` of this process among those a launcher started; ``(0, 1)`` outside one."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    return (rank, size) if size > 1 else (0, 1)


def is_main() -> bool:
    """Whether this process writes (rank 0, or the only process)."""
    return world()[0] == 0


def _ready() -> None:
    """Join the process group the launcher described (gloo on CPUs, NCCL on GPUs), once."""
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not _cuda())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def gather(rows: list[Any]) -> list[Any]:
    """Every process's ``rows`` concatenated in rank order, on every process (picklable objects)."""
    if world()[1] == 1:
        return rows
    import torch.distributed as dist

    _ready()
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    return [row for part in parts for row in part]


def barrier() -> None:
    """Wait until every process gets here (a no-op outside a launcher)."""
    if world()[1] == 1:
        return
    import torch.distributed as dist

    _ready()
    dist.barrier()
