"""Seeded, deterministic few-shot sampling (k examples per class, or n at the pool's own label distribution) and
test subsampling."""

from __future__ import annotations

from dataclasses import replace

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
    by_label = _by_label(pool)
    chosen: list[int] = []
    for lab in pool.labels:
        idx = by_label[lab]
        if len(idx) < shots:
            raise DataError(
                f"{pool.name}: label {lab!r} has only {len(idx)} examples, fewer than --shots {shots}"
            )
        chosen.extend(sorted(rng.choice(idx, size=shots, replace=False).tolist()))
    return Dataset(tuple(pool.examples[i] for i in chosen), pool.labels, name=pool.name, seed=seed, shots=shots,
                   task=pool.task, reserved=pool.reserved)


def sample_k_per_label(pool: Dataset, shots: int, seed: int) -> Dataset:
    """A multi-label few-shot sample: at least ``shots`` examples carrying each label, drawn greedily.

    Labels are visited from the rarest in the pool to the most frequent (ties in label order); each draws, with
    ``numpy.random.default_rng(seed)`` and without replacement, just the examples it still lacks from those not yet
    drawn — an example drawn for a rare label counts for every label it carries, so frequent labels usually need
    few draws of their own. The size of the sample is therefore not ``shots × labels`` but what the draw needed
    (``len`` of the result; the runner records it). A label with fewer than ``shots`` examples in the pool gets all
    of them (real label distributions have a long tail), named in :attr:`Dataset.short` so callers can say so; a
    label with none is a one-line :class:`DataError`. Deterministic, in pool order."""
    if shots < 1:
        raise DataError(f"shots must be at least 1 (got {shots})")
    Y = pool.indicator()
    counts = Y.sum(axis=0)
    empty = [lab for lab, n in zip(pool.labels, counts, strict=True) if n == 0]
    if empty:
        raise DataError(f"{pool.name}: label(s) {empty} have no example in the pool to draw")
    rng = np.random.default_rng(seed)
    taken = np.zeros(len(pool), dtype=bool)
    for c in sorted(range(len(pool.labels)), key=lambda c: (counts[c], c)):
        need = shots - int(Y[taken, c].sum())
        if need <= 0:
            continue
        free = np.flatnonzero((Y[:, c] == 1) & ~taken)
        taken[rng.choice(free, size=min(need, len(free)), replace=False)] = True
    short = tuple(lab for lab, n in zip(pool.labels, counts, strict=True) if n < shots)
    return Dataset(tuple(pool.examples[i] for i in np.flatnonzero(taken)), pool.labels, name=pool.name, seed=seed,
                   shots=shots, task=pool.task, short=short, reserved=pool.reserved)


def sample_natural(pool: Dataset, n: int, seed: int) -> Dataset:
    """``n`` examples drawn the way users' labelled data comes: at the pool's own label distribution, with every
    label at least once (so a classifier can know it).

    One example of every label is drawn first, then the other ``n - labels`` uniformly at random from the rest of
    the pool (``numpy.random.default_rng(seed)``): each label's expected count is its pool share of ``n``, except
    that the rarest get their one example. Deterministic, in pool order. ``n`` below the number of labels, or a
    label with no example in the pool, is a one-line :class:`DataError`."""
    if pool.multi_label:
        raise DataError(f"{pool.name} is multi-label: its samples are drawn per label (sample: per_class), not at the "
                        "pool's own distribution")
    labels = pool.labels
    check_natural_size(pool.name, n, len(labels))
    if n > len(pool):
        raise DataError(f"{pool.name}: --n {n} is more than the {len(pool)} examples of the pool")
    rng = np.random.default_rng(seed)
    by_label = _by_label(pool)
    empty = [lab for lab, idx in by_label.items() if not idx]
    if empty:
        raise DataError(f"{pool.name}: label(s) {empty} have no example in the pool to draw")
    first = [int(rng.choice(by_label[lab])) for lab in labels]
    rest = np.setdiff1d(np.arange(len(pool)), first)
    chosen = sorted(first + rng.choice(rest, size=n - len(first), replace=False).tolist())
    return Dataset(tuple(pool.examples[i] for i in chosen), labels, name=pool.name, seed=seed, shots=n, task=pool.task,
                   reserved=pool.reserved)


def check_natural_size(name: str, n: int, n_labels: int) -> None:
    """A natural-distribution sample of ``n`` needs one example of each of ``n_labels`` labels: a one-line
    :class:`DataError` otherwise (the command line checks it before any model loads)."""
    if n < n_labels:
        raise DataError(f"--n {n} is smaller than the number of labels of {name} ({n_labels}); every label needs at "
                        f"least one example: use --n {n_labels} or more")


def draw(pool: Dataset, shots: int, seed: int, how: str = "per_class") -> Dataset:
    """A few-shot sample of ``pool``: ``shots`` per class (``how="per_class"``, :func:`sample_k_per_class`; at least
    ``shots`` per label for a multi-label pool, :func:`sample_k_per_label`) or ``shots`` in all at the pool's own
    label distribution (``how="natural"``, :func:`sample_natural`)."""
    if pool.multi_label and how != "natural":
        return sample_k_per_label(pool, shots, seed)
    return (sample_natural if how == "natural" else sample_k_per_class)(pool, shots, seed)


def size_label(shots: int, how: str | None = "per_class") -> str:
    """How a sample's size reads in tables and logs: ``16-shot``, or ``n = 64`` for a natural-distribution one."""
    return f"n = {shots}" if how == "natural" else f"{shots}-shot"


def _by_label(pool: Dataset) -> dict[str, list[int]]:
    """The pool's example positions per label, every label of ``pool.labels`` present (an example whose label is
    not one of them is a one-line :class:`DataError`)."""
    by_label: dict[str, list[int]] = {lab: [] for lab in pool.labels}
    for i, ex in enumerate(pool.examples):
        if ex.label not in by_label:
            raise DataError(f"{pool.name}: example {ex.id} has label {ex.label!r} outside {list(pool.labels)}")
        by_label[ex.label].append(i)
    return by_label


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
    validation example, and choices made on it never touch a test set). The rest, and every sample drawn from it,
    carries the validation ids as :attr:`Dataset.reserved`, so a method's dev split, drawn from the task's whole
    train pool, leaves them out too."""
    val = (sample_k_per_label if pool.multi_label else sample_k_per_class)(pool, per_class, seed)
    rest = pool.excluding(val)
    return val, replace(rest, reserved=rest.reserved | {e.id for e in val if e.id is not None})
