"""Seeded, deterministic few-shot sampling (k examples per class) and test subsampling."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .example import Dataset


def sample_k_per_class(pool: Dataset, shots: int, seed: int) -> Dataset:
    """``shots`` examples of every label drawn without replacement with ``numpy.random.default_rng(seed)``.

    The same pool, shots and seed always give the same examples in the same order (class by class,
    pool order within a class), whatever else the program did before.
    """
    if shots < 1:
        raise DataError(f"shots must be at least 1 (got {shots})")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {lab: [] for lab in pool.labels}
    for i, ex in enumerate(pool.examples):
        if ex.label not in by_label:
            raise DataError(f"{pool.name}: example {ex.id} has label {ex.label!r} outside {list(pool.labels)}")
        by_label[ex.label].append(i)
    chosen: list[int] = []
    for lab in pool.labels:
        idx = by_label[lab]
        if len(idx) < shots:
            raise DataError(
                f"{pool.name}: label {lab!r} has only {len(idx)} examples, fewer than --shots {shots}"
            )
        chosen.extend(sorted(rng.choice(idx, size=shots, replace=False).tolist()))
    return Dataset(tuple(pool.examples[i] for i in chosen), pool.labels, name=pool.name, seed=seed, shots=shots,
                   task=pool.task)


def subsample(ds: Dataset, size: int, seed: int = 0) -> Dataset:
    """A seeded random subset of ``size`` examples, kept in the original order."""
    if size < 1:
        raise DataError(f"subset size must be at least 1 (got {size})")
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(ds), size=min(size, len(ds)), replace=False).tolist())
    return Dataset(tuple(ds.examples[i] for i in idx), ds.labels, name=ds.name, seed=seed, task=ds.task)


def held_out(pool: Dataset, per_class: int, seed: int) -> tuple[Dataset, Dataset]:
    """(validation, rest): ``per_class`` examples of every label drawn from ``pool`` with ``seed`` as a validation
    split, and the pool without them, which few-shot samples are then drawn from (so no sample ever holds a
    validation example, and choices made on it never touch a test set)."""
    val = sample_k_per_class(pool, per_class, seed)
    return val, pool.excluding(val)
