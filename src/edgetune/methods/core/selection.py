"""Which dev check a gradient-trained method keeps: the selection rules, torch-free (reports replay them on
recorded dev curves)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def choose(checks: Sequence[tuple[int, float, float, Any]], select_by: str, n_dev: int) -> int:
    """Index of the check to keep among (step, dev accuracy, dev loss, ...) tuples, the first being the start.

    ``"accuracy"``: the earliest check with the highest dev accuracy (the papers' rule). ``"loss"``: the lowest
    dev loss among the checks at least as accurate as the start *and* within two dev examples of the most
    accurate check — loss separates checks that a small dev split scores alike, and the accuracy window keeps
    it from preferring a collapsed, near-uniform model whose loss is low only because it is unsure.
    """
    accs = [c[1] for c in checks]
    if select_by == "accuracy":
        return accs.index(max(accs))
    floor = accuracy_floor(accs, n_dev)
    return min((i for i, a in enumerate(accs) if a >= floor), key=lambda i: checks[i][2])


def accuracy_floor(accs: Sequence[float], n_dev: int) -> float:
    """The loss rule's accuracy floor (its window's lower edge): the start's dev accuracy, or two dev examples below
    the best, if higher."""
    return max(accs[0], max(accs) - 2.0 / max(n_dev, 1) - 1e-9)


def unchoosable(checks: Sequence[tuple[int, float, float, Any]], select_by: str, n_dev: int) -> list[int]:
    """Indices of checks that :func:`choose` can never pick, however training goes on: their weights can be
    dropped (a full fine-tuning checkpoint of SmolLM2 is 0.5 GB).

    ``"accuracy"``: every check but the earliest most accurate one (a later pick must be strictly more accurate).
    ``"loss"``: a check below the accuracy floor (the floor only rises), and a check *dominated* by another — at
    least as accurate and with a lower loss (or the same loss, earlier): whenever the dominated check is in the
    window, the other one is too and is preferred. The pick of ``checks[:-1]`` stays unless the latest check
    dominates it, and then rollback does not fire (the latest check is at least as accurate)."""
    keep = choose(checks, select_by, n_dev)
    if select_by == "accuracy":
        return [i for i in range(len(checks)) if i != keep]
    accs = [c[1] for c in checks]
    floor = accuracy_floor(accs, n_dev)

    def dominated(i: int) -> bool:
        return any(j != i and accs[j] >= accs[i] and (checks[j][2], j) < (checks[i][2], i) for j in range(len(checks)))

    return [i for i in range(len(checks)) if i != keep and (accs[i] < floor or dominated(i))]


def winner(folds: Sequence[Sequence[float]], tie: float, prefer: int | None = None) -> tuple[int, list[bool]]:
    """Which candidate ``auto`` keeps, from each candidate's scores on the same cross-validation folds (one row per
    candidate, cheapest first), and which tied with the best.

    The best is the highest mean. A candidate ties with it when its mean is within ``tie`` standard errors of the
    per-fold difference between the two (paired: the folds are the same) — a gap the folds cannot tell from noise.
    Among the tied, ``prefer`` (a row index) wins if it is one of them, else the cheapest (the first row)."""
    import numpy as np

    scores = np.asarray(folds, dtype=np.float64)
    means = scores.mean(axis=1)
    best = int(np.argmax(means))  # the first of equal means: the cheaper
    tied = []
    for row in scores:
        diff = scores[best] - row
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        tied.append(bool(diff.mean() <= tie * se + 1e-12))
    if prefer is not None and tied[prefer]:
        return prefer, tied
    return tied.index(True), tied
