"""Multi-label decisions every method shares: per-label probabilities against a threshold, and the threshold chosen
by cross-validation on the training sample.

A multi-label method scores each label on its own (a logit per label, :meth:`Method.class_scores`); its probability
is the logistic sigmoid of that score, and a label is predicted when its probability reaches the threshold. When the
data never has an empty label list (GoEmotions: every comment carries at least ``neutral``), a text whose
probabilities all fall short still gets its most probable label — an empty answer is then known to be wrong.

``threshold="cv"`` picks one threshold for all labels: the one whose decisions on out-of-fold probabilities (each
training example scored by a model fitted without it) reach the highest micro-F1. One shared threshold, not one per
label, because a few-shot sample holds a handful of positives per label, too few to place 28 thresholds apart
without fitting noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: thresholds ``"cv"`` tries: a grid fine enough for F1, plus the out-of-fold probabilities' own quantiles
_GRID = np.round(np.arange(0.02, 0.99, 0.01), 2)


def sigmoid(x: Any) -> np.ndarray:
    """The logistic function, without overflow warnings for large scores."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def logit(p: Any, eps: float = 1e-7) -> np.ndarray:
    """The inverse of :func:`sigmoid` (probabilities clipped to [eps, 1 - eps])."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def decide(P: Any, thresholds: Any, allow_empty: bool) -> np.ndarray:
    """(n, C) booleans: each label whose probability reaches its threshold; without ``allow_empty`` a row with none
    gets its most probable label."""
    P = np.asarray(P, dtype=np.float64)
    out = np.asarray(thresholds, dtype=np.float64)[None, :] <= P
    if not allow_empty and len(P):
        none = ~out.any(axis=1)
        out[np.flatnonzero(none), P[none].argmax(axis=1)] = True
    return out


def micro_f1(Y: np.ndarray, decided: np.ndarray) -> float:
    """Micro-averaged F1 of boolean decisions (the same number as scikit-learn's, computed here for the search)."""
    y = Y.astype(bool)
    tp = float((y & decided).sum())
    denom = float(y.sum() + decided.sum())
    return 2 * tp / denom if denom else 1.0


def choose_threshold(P: Any, Y: Any, allow_empty: bool) -> tuple[float, float]:
    """The threshold whose decisions on ``P`` (out-of-fold probabilities, (n, C)) give the highest micro-F1 against
    ``Y`` (the 0/1 truth), and that micro-F1; ties go to the threshold nearest 0.5 (the untuned one)."""
    P, Y = np.asarray(P, dtype=np.float64), np.asarray(Y)
    finite = P[np.isfinite(P)]
    quantiles = np.quantile(finite, np.linspace(0.5, 0.995, 50)) if finite.size else np.array([])
    candidates = np.unique(np.concatenate([_GRID, np.clip(quantiles, 1e-6, 1 - 1e-6)]))
    best, best_f1 = 0.5, -1.0
    for t in candidates:
        f1 = micro_f1(Y, decide(P, np.full(P.shape[1], t), allow_empty))
        if f1 > best_f1 + 1e-12 or (abs(f1 - best_f1) <= 1e-12 and abs(t - 0.5) < abs(best - 0.5)):
            best, best_f1 = float(t), f1
    return best, best_f1


def label_folds(Y: Any, k: int, seed: int) -> np.ndarray:
    """A fold number per example (``k`` folds) that spreads every label's examples over the folds: examples are
    dealt round-robin, rarest label first (a seeded shuffle within), so a label with k or more examples appears in
    every fold's training part."""
    Y = np.asarray(Y, dtype=bool)
    n = len(Y)
    k = max(2, min(k, n))
    rng = np.random.default_rng(seed)
    folds = np.full(n, -1, dtype=np.int64)
    counts = Y.sum(axis=0)
    turn = 0
    for c in sorted(range(Y.shape[1]), key=lambda c: (counts[c], c)):
        rows = np.flatnonzero(Y[:, c] & (folds < 0))
        for i in rng.permutation(rows):
            folds[i] = turn % k
            turn += 1
    rest = rng.permutation(np.flatnonzero(folds < 0))  # rows with no label
    for i in rest:
        folds[i] = turn % k
        turn += 1
    return folds
