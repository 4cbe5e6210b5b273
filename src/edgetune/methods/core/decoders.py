"""The output-edge decoder maths: calibration, the λ search by cross-validation, batched decoder training."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import DataError, EdgetuneError
from .config import epoch_choices


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def calibrate(scores: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al., 2021): divide each label word's probability (normalised over
    the label words) by its probability for content-free inputs, renormalise; in log space.

    ``content_free`` is (m, C) scores of m content-free prompts; their normalised log-probs are averaged.
    (The DecT reference divides raw logits by the content-free logits over their mean; that is only
    meaningful when logits are positive, as for RoBERTa's MLM head, so edgetune uses the probability form.)
    """
    prior = log_softmax(content_free).mean(axis=0, keepdims=True)
    return log_softmax(log_softmax(scores) - prior)


def batch_prior(scores: np.ndarray) -> np.ndarray:
    """Batch calibration's prior (Zhou et al., 2023): (1, C) log of the mean label-word probability
    (normalised over the label words) over the rows of ``scores``, a batch of unlabelled inputs."""
    return np.log(np.exp(log_softmax(scores.astype(np.float64))).mean(axis=0, keepdims=True))


def batch_calibrate(scores: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Normalised label-word log-probabilities divided by a :func:`batch_prior` (log space), renormalised —
    the same form as :func:`calibrate`, with the prior estimated from real inputs."""
    return log_softmax(log_softmax(scores.astype(np.float64)) - prior).astype(np.float32)


def logistic_head(clf: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted scikit-learn ``LogisticRegression`` as (C, d) coefficients and (C,) intercepts over all
    ``n_classes`` (a class absent from training gets a -1e9 intercept), so prediction is a matrix product
    and nothing pickled is ever stored."""
    coef = np.zeros((n_classes, clf.coef_.shape[1]), np.float32)
    bias = np.full(n_classes, -1e9, np.float32)
    if len(clf.classes_) == 2:  # sklearn keeps one row for two classes: score(c1) - score(c0) = w.x + b
        coef[clf.classes_[1]] = clf.coef_[0]
        bias[clf.classes_[1]] = clf.intercept_[0]
        bias[clf.classes_[0]] = 0.0
    else:
        coef[clf.classes_] = clf.coef_
        bias[clf.classes_] = clf.intercept_
    return coef, bias


def torch_threads(n: int | None) -> contextlib.AbstractContextManager[None]:
    """Run the block with ``n`` torch threads (``None``: as set), restoring the setting after (decoders are
    small-tensor work, which several threads beside a busy process slow down badly). Torch is imported on use."""
    from ...backends.precision import torch_threads as threads

    return threads(n)


def label_counts(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Training examples per label, from label indices (n,) or a multi-label 0/1 matrix (n, C)."""
    y = np.asarray(y)
    return y.sum(axis=0) if y.ndim == 2 else np.bincount(y, minlength=n_classes)


#: a one-vs-rest label that is constant in its training data answers this logit (its sign), far from any threshold
CONSTANT_LOGIT = 8.0


def one_vs_rest(z: np.ndarray, Y: np.ndarray, make: Callable[[], Any]) -> tuple[np.ndarray, np.ndarray]:
    """(C, d) coefficients and (C,) intercepts of one binary logistic regression per label of the 0/1 matrix ``Y``
    (``make()`` gives an unfitted scikit-learn ``LogisticRegression``); a label every text (or none) has gets no
    coefficients and ±:data:`CONSTANT_LOGIT`. scikit-learn's ``OneVsRestClassifier`` does the same but turns such a
    label into a coefficient-free constant predictor."""
    coef, bias = np.zeros((Y.shape[1], z.shape[1])), np.zeros(Y.shape[1])
    for c in range(Y.shape[1]):
        col = Y[:, c]
        if col.min() == col.max():
            bias[c] = CONSTANT_LOGIT if col[0] else -CONSTANT_LOGIT
            continue
        clf = make().fit(z, col)
        coef[c], bias[c] = clf.coef_[0], clf.intercept_[0]
    return coef.astype(np.float32), bias.astype(np.float32)


def class_counts(name: str, labels: Sequence[str], y: np.ndarray) -> np.ndarray:
    """Training examples per label (label indices or a multi-label 0/1 matrix); a label without one is an error
    naming it."""
    counts = label_counts(y, len(labels))
    if (counts == 0).any():
        missing = [labels[i] for i in np.flatnonzero(counts == 0)]
        raise DataError(f"{name} needs at least one training example of every label; none for {missing}")
    return counts


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-example weights n / (classes × count of the example's class): scikit-learn's ``class_weight="balanced"``
    (``compute_sample_weight``), so every class weighs the same in a loss, whatever its count."""
    from sklearn.utils.class_weight import compute_sample_weight

    return compute_sample_weight("balanced", np.asarray(y)).astype(np.float32)


def class_weight_tensor(class_weight: str | None, y: Any, n_classes: int) -> Any:
    """A (C,) torch tensor of per-class loss weights for ``class_weight="balanced"`` (None for ``None``), for
    ``torch.nn.functional.cross_entropy(weight=...)``."""
    if class_weight is None:
        return None
    import torch
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    present = np.unique(y)
    weights = np.ones(n_classes, np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return torch.tensor(weights, dtype=torch.float32)


def stratified_folds(y: np.ndarray, n_classes: int, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every example: each class's examples dealt round-robin over the folds in a
    seeded random order (the folds of a λ search by cross-validation on the training sample)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in range(n_classes):
        idx = np.flatnonzero(np.asarray(y) == c)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


@dataclass(frozen=True)
class LambdaSearch:
    """The decoders of a λ search by stratified k-fold cross-validation, trained as one batch: row ``i·k + f``
    trains λ = ``grid[i]`` on every fold but ``f``; the last ``len(grid)`` rows train each λ on all the data
    (so the chosen λ's final decoder comes out of the same training run). ``k = 0``: no cross-validation (too
    few examples per class), one row per λ on all the data."""

    grid: tuple[float, ...]
    k: int
    weights: Any  # torch.Tensor (M, n): which examples each decoder trains on
    lams: Any  # torch.Tensor (M,): each decoder's λ
    #: torch.Tensor (n,): each example's weight in the loss and in the cross-validated accuracy (None: equal)
    sample_weight: Any = None

    @classmethod
    def build(cls, y: np.ndarray, n_classes: int, grid: Sequence[float], folds: int, seed: int) -> LambdaSearch:
        import torch

        grid = tuple(grid)
        k = int(min(folds, np.bincount(np.asarray(y), minlength=n_classes).min()))
        if k < 2:
            return cls(grid, 0, torch.ones(len(grid), len(y)), torch.tensor(grid, dtype=torch.float32))
        fold = torch.from_numpy(stratified_folds(np.asarray(y), n_classes, k, seed))
        held = torch.tensor([f for _ in grid for f in range(k)])
        weights = torch.cat([(fold[None] != held[:, None]).float(), torch.ones(len(grid), len(y))])
        lams = torch.tensor([g for g in grid for _ in range(k)] + list(grid), dtype=torch.float32)
        return cls(grid, k, weights, lams)

    @classmethod
    def plan(cls, y: np.ndarray, n_classes: int, lam: float | str | None, lam_grid: Sequence[float], epochs: Any,
             folds: int, seed: int) -> tuple[LambdaSearch, tuple[int, ...]]:
        """The search a decoder's settings ask for, and the training lengths to snapshot: λ from {1/shots} ∪
        ``lam_grid`` when ``lam="cv"``, else fixed (a number; ``None``: 1/shots); lengths from ``epochs``
        (:func:`epoch_choices`). Cross-validated when λ or the length has candidates and every class has two
        examples or more; otherwise one decoder on all the data (λ = 1/shots for ``"cv"``) at the longest length."""
        shots = float(np.bincount(np.asarray(y), minlength=n_classes).mean())
        lengths = epoch_choices(epochs)
        grid = sorted({round(1.0 / shots, 6), *lam_grid}) if lam == "cv" else [
            1.0 / shots if lam is None else float(lam)]
        search = cls.build(y, n_classes, grid, folds if lam == "cv" or len(lengths) > 1 else 1, seed)
        if lam == "cv" and not search.k:  # too few examples per class to cross-validate
            search = cls.build(y, n_classes, [1.0 / shots], 1, seed)
        return search, lengths if search.k else (max(lengths),)

    def choose(self, snapshots: Mapping[int, tuple[Any, ...]], y: Any) -> tuple[int, int, dict[float, float]]:
        """(training length, row of the kept decoder, λ → CV accuracy) from snapshots of one training run (epochs
        → a tuple whose last item is every decoder's scores on the training examples, (M, n, C)); without
        cross-validation the longest length and the only row.

        A decoder whose scores are not finite at a length (its training diverged there: :func:`train_rows` marks it
        so) is no candidate at that length: a λ is chosen at a length only where all its rows — its
        cross-validation decoders and its final one — are finite. ``ValueError`` when no λ and length qualify."""
        import torch

        finite = {e: torch.isfinite(snap[-1]).flatten(1).all(1) for e, snap in snapshots.items()}
        if not self.k:
            ok = [e for e in snapshots if bool(finite[e][0])]
            if not ok:
                raise ValueError("no finite decoder")
            return max(ok), 0, {}
        usable = {e: [bool(f[i * self.k:(i + 1) * self.k].all() and f[self.n_cv + i]) for i in range(len(self.grid))]
                  for e, f in finite.items()}
        return self.pick_length({e: snap[-1][: self.n_cv] for e, snap in snapshots.items()}, y, usable)

    @property
    def n_cv(self) -> int:
        """Rows that are cross-validation decoders (the first ones)."""
        return len(self.grid) * self.k

    def lam(self, row: int) -> float:
        """The λ of a row, exactly as in the grid."""
        return self.grid[(row - self.n_cv) if row >= self.n_cv else row // max(self.k, 1)]

    def evaluate(self, held_scores: Any, y: Any) -> tuple[Any, Any]:
        """Cross-validated accuracy and log-loss of each λ (tensors of ``len(grid)``), from the CV decoders'
        scores on every training example (``held_scores`` (n_cv, n, C); each is judged on its held-out fold)."""
        import torch.nn.functional as F

        n, c = held_scores.shape[1:]
        correct = (held_scores.argmax(-1) == y[None]).float()
        ce = F.cross_entropy(held_scores.reshape(-1, c), y.repeat(self.n_cv), reduction="none").reshape(self.n_cv, n)
        held_out = 1.0 - self.weights[: self.n_cv]
        total = float(n)
        if self.sample_weight is not None:  # balanced classes: the accuracy is the balanced accuracy
            held_out, total = held_out * self.sample_weight[None], float(self.sample_weight.sum())
        acc = (correct * held_out).sum(1).reshape(len(self.grid), self.k).sum(1) / total
        nll = (ce * held_out).sum(1).reshape(len(self.grid), self.k).sum(1) / total
        return acc, nll

    def pick(self, held_scores: Any, y: Any) -> tuple[int, dict[float, float]]:
        """The row of the chosen λ's final decoder and λ → cross-validated accuracy (:meth:`evaluate`); ties in
        accuracy go to the lower held-out log-loss."""
        if not self.k:
            return 0, {}
        _, row, accuracy = self.pick_length({0: held_scores}, y)
        return row, accuracy

    def pick_length(self, held: Mapping[int, Any], y: Any, usable: Mapping[int, Sequence[bool]] | None = None
                    ) -> tuple[int, int, dict[float, float]]:
        """λ and training length together, from the CV decoders' held-out scores after each candidate number of
        epochs (``held``: epochs → (n_cv, n, C) scores, snapshots of one run): the chosen length, the row of the
        chosen λ's final decoder, and λ → CV accuracy at that length. Best accuracy, then lowest log-loss, then
        the shorter training. ``usable``: epochs → whether each λ may be chosen at that length (default: all);
        the accuracy table leaves out the λ values that may not."""
        best: tuple[float, float, int, int] | None = None
        table = {}
        for e, scores in held.items():
            acc, nll = self.evaluate(scores, y)
            table[e] = acc
            for i in range(len(self.grid)):
                if usable is not None and not usable[e][i]:
                    continue
                key = (-round(float(acc[i]), 6), float(nll[i]), e, i)
                best = key if best is None or key < best else best
        if best is None:
            raise ValueError("no candidate training length")
        _, _, e, i = best
        return e, self.n_cv + i, {g: float(a) for j, (g, a) in enumerate(zip(self.grid, table[e], strict=True))
                                  if usable is None or usable[e][j]}


def train_rows(forward: Callable[[], Any], opt: Any, y: Any, weights: Any, epochs: int,
               snapshots: dict[int, Any], keep: Callable[[Any], Any], params: Sequence[Any] = ()) -> Any:
    """Full-batch training of M decoders at once (one per row of ``weights``: which examples it trains on):
    ``forward()`` gives every decoder's scores (M, n, C), each row's loss is its weighted cross-entropy (``y`` an
    (n, C) 0/1 matrix: the binary cross-entropy of one sigmoid per label, summed over the labels), ``opt``
    steps ``epochs`` times. After every number of steps that is a key of ``snapshots`` it holds ``keep(scores)``
    — the scores of that step's own forward pass, taken before the update, so a snapshot costs no extra pass.
    Returns each decoder's loss per step (M, epochs).

    A decoder whose scores or loss stop being finite (a learning rate that diverges) is stopped there, alone: its
    parameters — the rows of ``params``, the tensors whose first axis is the decoder — go back to the last values
    that gave finite scores and stay there, its later losses are NaN, and its scores in later snapshots are NaN, so
    that no choice takes it for a decoder trained that long (:meth:`LambdaSearch.choose`). Training ends early when
    every decoder has stopped. Rows never mix (every operation is per row), so the others train on unchanged."""
    import torch
    import torch.nn.functional as F

    m, norm, losses = weights.shape[0], weights.sum(1).clamp_min(1.0), []
    alive = torch.ones(m, dtype=torch.bool)
    good = [p.detach().clone() for p in params]  # each row's last parameters with finite scores

    def stop_rows(rows: Any) -> None:
        with torch.no_grad():
            for p, g in zip(params, good, strict=True):
                p[rows] = g[rows]

    def marked(scores: Any) -> Any:
        if bool(alive.all()):
            return scores
        out = scores.detach().clone()
        out[~alive] = float("nan")
        return out

    for step in range(epochs + 1):
        last = step == epochs
        if last and step not in snapshots:
            break
        if not last:
            opt.zero_grad()
        with torch.no_grad() if last else contextlib.nullcontext():
            scores = forward()
        finite = torch.isfinite(scores.detach()).flatten(1).all(1)
        if not last:
            if y.dim() == 2:  # multi-label: one sigmoid per label, binary cross-entropy summed over the labels
                ce = F.binary_cross_entropy_with_logits(scores, y.float()[None].expand_as(scores),
                                                        reduction="none").sum(-1)
            else:
                ce = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), y.repeat(m),
                                     reduction="none").reshape(m, -1)
            per_row = (ce * weights).sum(1) / norm
            finite &= torch.isfinite(per_row.detach())
        newly = alive & ~finite
        if bool(newly.any()):
            alive &= finite
            stop_rows(newly)
        with torch.no_grad():
            for p, g in zip(params, good, strict=True):
                if bool(alive.all()):
                    g.copy_(p.detach())
                else:
                    g[alive] = p.detach()[alive]
        if step in snapshots:
            snapshots[step] = keep(marked(scores.detach()))
        if last:
            break
        if not bool(alive.any()):  # every decoder has stopped: nothing left to train
            losses.append(torch.full((m,), float("nan")))
            rest = keep(marked(scores.detach()))
            for e in snapshots:
                if e > step:
                    snapshots[e] = rest
            losses.extend(torch.full((m,), float("nan")) for _ in range(epochs - step - 1))
            break
        torch.where(alive, per_row, torch.zeros_like(per_row)).sum().backward()
        opt.step()
        if not bool(alive.all()):
            stop_rows(~alive)
        losses.append(torch.where(alive, per_row.detach(), torch.full_like(per_row, float("nan"))))
    return torch.stack(losses).T if losses else torch.zeros(m, 0)


@dataclass(frozen=True)
class SearchedDecoder:
    """The decoder a :func:`fit_searched` run keeps: its λ, training length, λ → CV accuracy at that length,
    parameters (W, prototypes, radii) and loss per step; ``stopped`` says what diverged, when training did."""

    lam: float
    epochs: int
    cv_accuracy: dict[float, float]
    W: np.ndarray
    protos: np.ndarray
    radii: np.ndarray
    losses: list[float]
    stopped: str | None = None


def fit_searched(train: Callable[[Any, Any, int, dict[int, Any]], Any], y: np.ndarray, n_classes: int, *,
                 lam: float | str | None, lam_grid: Sequence[float], epochs: Any, folds: int,
                 seed: int, name: str = "decoder", class_weight: str | None = None) -> SearchedDecoder:
    """Plan the search a prototype decoder's settings ask for (:meth:`LambdaSearch.plan`), train every row in one
    run — ``train(lams, weights, epochs, snapshots)`` returns the losses and fills ``snapshots`` with (a function
    giving one row's W, prototypes, radii, scores), as :func:`train_rows` does — and keep the chosen row.

    Decoders whose training went non-finite (:func:`train_rows` stops each at its last finite step) are never
    chosen; when no λ is left, the final decoder that stayed finite longest is kept as it was at its last finite
    step. Either way a warning names the step. No finite decoder at all (non-finite from the first step: the
    features or λ) is a one-line :class:`EdgetuneError`; a NaN decoder is never returned."""
    import warnings

    import torch

    search, choices = LambdaSearch.plan(y, n_classes, lam, lam_grid, epochs, folds, seed)
    weights = search.weights
    if class_weight == "balanced":  # every class weighs the same in each decoder's loss and in the λ choice
        sw = torch.from_numpy(balanced_weights(y, n_classes))
        search = dataclasses.replace(search, sample_weight=sw)
        weights = weights * sw[None]
    snaps: dict[int, Any] = dict.fromkeys(choices)
    longest = max(choices)
    losses = train(search.lams, weights, longest, snaps)
    final_scores = snaps[longest][-1]

    def first_bad(row: int) -> int | None:
        """The first step whose forward pass was not finite for this row (None: it never diverged)."""
        bad = torch.nonzero(~torch.isfinite(losses[row, :longest])).flatten()
        if len(bad):
            return int(bad[0])
        return None if bool(torch.isfinite(final_scores[row]).all()) else longest

    stops = {r: b for r in range(len(search.lams)) if (b := first_bad(r)) is not None}
    stopped = None
    try:
        length, row, accuracy = search.choose(snaps, torch.from_numpy(np.asarray(y, dtype=np.int64)))
        kept_length = length
        if stops:
            stopped = (f"training went non-finite in {len(stops)} of {len(search.lams)} decoders (first at step "
                       f"{min(stops.values())}); none of them was chosen")
    except ValueError:  # no λ has finite decoders at any candidate length: keep the longest-lived final decoder
        finals = [search.n_cv + i for i in range(len(search.grid))] if search.k else [0]
        row = max(finals, key=lambda r: (stops.get(r, longest + 1), -r))
        b = stops.get(row, longest + 1)
        if b == 0:
            raise EdgetuneError(f"{name}: training gave non-finite scores from its first step (check the features "
                                f"and lam={lam!r}); no decoder to keep") from None
        length, kept_length, accuracy = longest, min(b - 1, longest), {}
        stopped = (f"training went non-finite at step {min(stops.values())}; kept the λ={search.lam(row):g} decoder "
                   f"as it was after {kept_length} step(s), its last finite one")
    if stopped is not None:
        warnings.warn(f"{name}: {stopped} (lower the learning rate)", stacklevel=3)
    weights_of, protos, radii, _ = snaps[length]
    W, P, R = (weights_of(row).numpy().copy(), protos[row].numpy().copy(), radii[row].numpy().copy())
    if not all(np.isfinite(a).all() for a in (W, P, R)):
        raise EdgetuneError(f"{name}: the kept decoder is not finite (training diverged); lower the learning rate")
    return SearchedDecoder(search.lam(row), kept_length, accuracy, W, P, R, losses[row, :kept_length].tolist(),
                           stopped)

