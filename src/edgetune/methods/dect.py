"""DecT: Decoder Tuning (Cui et al., ACL 2023), the output-edge method.

One query per sample gives the label-word scores ``s`` and the hidden state ``h`` at the label position.
A small decoder is trained on top, full-batch with Adam:

    z        = normalise(W · standardise(h))       W: d -> proto_dim, no bias; z on the unit sphere
    score_c  = -||z - p_c|| + r_c + λ · s̃_c        p_c: class prototype, r_c: learned radius
    s̃        = calibrated label-word log-probabilities (content-free inputs, Zhao et al. 2021)
    loss     = cross-entropy(softmax(score), y)

Choices, each a parameter (reference = thunlp/DecT ``dect_verbalizer.py``):

- ``lam`` (λ): ``"cv"`` (default) picks λ from ``{1/shots} ∪ lam_grid`` by stratified ``cv_folds``-fold
  cross-validation on the training sample (all folds and λ values train as one batched model).
  ``None`` is the reference's 1/shots. The reference applies 1/shots to raw RoBERTa logits (magnitude
  ≈ 10-20, so an effective weight ≈ 1); on normalised log-probabilities 1/shots almost switches the
  prompt off.
- ``calibrate``: the reference divides raw logits by content-free logits; edgetune calibrates
  probabilities (see :func:`edgetune.methods.core.decoders.calibrate`), which is scale-free and equals the
  reference's intent. ``calibrate=False`` uses raw label-word log-probabilities; ``calibrate="batch"``
  takes the prior from the training sample's own scores instead of content-free prompts (batch
  calibration, Zhou et al. 2023, :func:`edgetune.methods.core.decoders.batch_prior`; no content-free query).
- ``normalize``: the reference feeds raw hidden states to ``W``. Decoder-only LMs have a few huge
  outlier dimensions in their last hidden state, which then dominate ``W·h``; standardising each
  dimension with the training mean/std (``"standardize"``, default) removes that. ``"center"`` only
  subtracts the mean; ``"none"`` is the reference.
- ``prototypes``: the reference draws prototypes at random (Xavier) and keeps them fixed, learning only
  ``W`` and the radii. ``"mean"`` (default) starts each prototype at its class's mean projected
  embedding and learns it too; ``"random"`` is the reference.
- Radii start at each class's mean distance to its prototype (the reference uses the class spread in
  the projected space before normalisation).
- ``epochs``: full-batch Adam steps at learning rate ``lr`` (the reference: 30 at 0.01), or a list of candidate
  lengths chosen with λ by the same cross-validation (snapshots of one run of the longest, so no extra
  training). Default ``(10, 20, 30)``.
- ``threads``: torch threads while fitting (1 by default; ``None`` leaves torch's setting).
- ``solver``: ``"span"`` (default) learns only the projection's part inside the span of the (standardised)
  training inputs, W = W0 + B·Vᵀ with V an orthonormal basis of that span (n ≤ d, so B is proto_dim × n):
  identical to learning W whole for gradient descent, not for Adam; ``"full"`` (the reference) learns the
  whole W.
- All the decoders of a fit — every (fold, λ) of the λ search and the full-data decoder of every λ — train as
  one batch (rows are independent), so a fit is one training loop; the chosen λ's full-data decoder is kept.

Why the defaults of ``lam``, ``normalize``, ``prototypes``, ``epochs``, ``threads`` and ``solver`` are what they
are: benchmarks/results/README.md, 'Where the defaults come from'.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..backends import Features
from ..errors import EdgetuneError
from .configs.dect import DecTConfig
from .core.config import epoch_choices
from .core.decoders import (
    batch_calibrate,
    batch_prior,
    calibrate,
    class_counts,
    fit_searched,
    log_softmax,
    torch_threads,
    train_rows,
)
from .core.multilabel import choose_threshold, label_folds, sigmoid
from .core.output_edge import OutputEdgeMethod
from .core.registry import register


@register
class DecT(OutputEdgeMethod):
    """Prototype decoder on a frozen model's output; see the module docstring for every choice.

    Attributes
    ----------
    W_ : ndarray of shape (proto_dim, d)
        Projection.
    protos_ : ndarray of shape (C, proto_dim)
        Class prototypes.
    radii_ : ndarray of shape (C,)
        Class radii.
    mean_, std_ : ndarray of shape (d,)
        Feature standardisation.
    content_free_, batch_prior_ : ndarray
        Content-free prompts' scores and the training sample's prior (calibration).
    lam_ : float
        The λ used.
    epochs_ : int
        The training length used.
    cv_accuracy_ : dict
        λ → cross-validated accuracy (when ``lam="cv"``).
    losses_ : list of float
        Training loss per epoch.
    stopped_ : str or None
        What diverged, when training stopped early.
    """

    config = DecTConfig

    @property
    def uses_content_free(self) -> bool:  # type: ignore[override]
        return self.calibrate is True

    def _epoch_choices(self) -> tuple[int, ...]:
        return epoch_choices(self.epochs)

    # -- pieces -----------------------------------------------------------------------------------------
    def _prior(self, scores: np.ndarray) -> np.ndarray:
        if self.calibrate == "batch":
            return batch_calibrate(scores, self.batch_prior_)
        return calibrate(scores, self.content_free_) if self.calibrate else log_softmax(scores)

    def _standardise(self, hidden: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((hidden - self.mean_) / self.std_).astype(np.float32))

    # -- training -----------------------------------------------------------------------------------------
    def _train(self, x: torch.Tensor, y: torch.Tensor, prior: torch.Tensor, lams: torch.Tensor,
               weights: torch.Tensor, n_classes: int, epochs: int | None = None,
               snapshots: dict[int, Any] | None = None) -> torch.Tensor:
        """Train M decoders at once (one per row of ``weights``: which samples it trains on, and its λ).

        Batching lets the λ search below cost one training run instead of one per (λ, fold).
        Returns each decoder's loss per epoch (M, epochs); the decoders themselves are read from ``snapshots``
        (only the kept row's projection is ever built).
        ``epochs``: the number of steps (default: the largest of ``self.epochs``); ``snapshots``: a dict whose
        keys are epoch counts, filled after that many steps with (a function giving one decoder's W, every
        decoder's prototypes, radii, and scores (M, n, C) on all the training examples — the scores of that
        step's own forward pass, so a snapshot costs no extra pass).
        """
        epochs = max(self._epoch_choices()) if epochs is None else epochs
        snapshots = {} if snapshots is None else snapshots
        m, d = weights.shape[0], x.shape[1]
        gen = torch.Generator().manual_seed(self.seed)
        bound = 1.0 / math.sqrt(d)  # nn.Linear's default initialisation range
        W0 = (torch.rand(self.proto_dim, d, generator=gen) * 2 - 1) * bound
        onehot = y.float() if y.dim() == 2 else F.one_hot(y, n_classes).float()  # (n, C); multi-label: Y itself
        with torch.no_grad():
            z0 = F.normalize(x @ W0.T, dim=-1)  # (n, k)
            per_class = weights[:, :, None] * onehot[None]  # (M, n, C)
            counts = per_class.sum(1).clamp_min(1e-9)  # (M, C)
            if self.prototypes == "mean":
                protos = torch.einsum("mnc,nk->mck", per_class, z0) / counts[..., None]
            else:
                b = math.sqrt(6.0 / (n_classes + self.proto_dim))
                protos = ((torch.rand(n_classes, self.proto_dim, generator=gen) * 2 - 1) * b).expand(m, -1, -1)
            dist0 = torch.cdist(z0[None].expand(m, -1, -1), protos)  # (M, n, C)
            radii = (per_class * dist0).sum(1) / counts
        # the projection of every decoder as one matrix product (M·k rows against the shared inputs), not a
        # batched product of M small ones: the same numbers, several times faster at these sizes
        if self.solver == "span":  # W = W0 + B·Vᵀ: only the part of W the training inputs can see is learned
            _, _, vh = torch.linalg.svd(x.double(), full_matrices=False)
            vh = vh.float()  # (r, d), r ≤ n: an orthonormal basis of the training inputs' span
            coords_t, base = (x @ vh.T).T.contiguous(), x @ W0.T  # (r, n), (n, k)
            learned = torch.zeros(m, self.proto_dim, vh.shape[0], requires_grad=True)

            def project() -> torch.Tensor:
                flat = learned.reshape(m * self.proto_dim, -1) @ coords_t  # (M·k, n)
                return base[None] + flat.view(m, self.proto_dim, -1).transpose(1, 2)
        else:
            x_t = x.T.contiguous()
            learned = W0.expand(m, -1, -1).clone().requires_grad_(True)

            def project() -> torch.Tensor:
                return (learned.reshape(m * self.proto_dim, d) @ x_t).view(m, self.proto_dim, -1).transpose(1, 2)
        protos = protos.clone().requires_grad_(self.prototypes == "mean")
        radii = radii.clone().requires_grad_(True)
        params = [learned, radii] + ([protos] if self.prototypes == "mean" else [])
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, fused=True)

        def keep(scores: torch.Tensor) -> tuple[Any, ...]:
            kept = learned.detach().clone()

            def weights_of(row: int) -> torch.Tensor:  # built only for the row that is kept
                return W0 + kept[row] @ vh if self.solver == "span" else kept[row]

            return weights_of, protos.detach().clone(), radii.detach().clone(), scores.detach()

        return train_rows(lambda: self._distance_scores(project(), protos, radii, prior, lams), opt, y, weights,
                          epochs, snapshots, keep, params=params)

    @classmethod
    def _batched_scores(cls, x: torch.Tensor, W: torch.Tensor, protos: torch.Tensor, radii: torch.Tensor,
                        prior: torch.Tensor, lams: torch.Tensor) -> torch.Tensor:
        return cls._distance_scores(torch.einsum("nd,mkd->mnk", x, W), protos, radii, prior, lams)

    @staticmethod
    def _distance_scores(projected: torch.Tensor, protos: torch.Tensor, radii: torch.Tensor, prior: torch.Tensor,
                         lams: torch.Tensor) -> torch.Tensor:
        """Scores of projected inputs (M, n, k): minus the distance to each prototype on the unit sphere, plus
        the radius, plus λ × the prompt's prior."""
        z = F.normalize(projected, dim=-1)  # (M, n, k), unit rows
        # ||z - p|| from one batched product (torch.cdist's backward is several times slower at this size)
        sq = 1.0 + (protos * protos).sum(-1)[:, None, :] - 2.0 * torch.bmm(z, protos.transpose(1, 2))
        return -sq.clamp_min(1e-12).sqrt() + radii[:, None, :] + lams[:, None, None] * prior[None]

    # -- OutputEdgeMethod --------------------------------------------------------------------------------
    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> DecT:
        with torch_threads(self.threads):
            return self._fit(train, y, content_free)

    def _inputs(self, train: Features, content_free: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's inputs: the standardised hidden states and the calibrated prior of the training sample
        (setting the statistics and priors a fit keeps)."""
        self.content_free_ = content_free.scores.astype(np.float32)
        self.batch_prior_ = batch_prior(train.scores).astype(np.float32)
        h = train.hidden.astype(np.float64)
        self.mean_ = (h.mean(axis=0) if self.normalize != "none" else np.zeros(h.shape[1])).astype(np.float32)
        self.std_ = (h.std(axis=0) + 1e-6 if self.normalize == "standardize" else np.ones(h.shape[1])).astype(
            np.float32)
        return self._standardise(train.hidden), torch.from_numpy(self._prior(train.scores).astype(np.float32))

    def _fit(self, train: Features, y: np.ndarray, content_free: Features) -> DecT:
        n_classes = len(self.labels_)
        if y.ndim == 2:
            return self._fit_multi_label(train, y, content_free)
        class_counts("DecT", self.labels_, y)  # every label needs an example
        x, prior = self._inputs(train, content_free)
        yt = torch.from_numpy(y.astype(np.int64))
        fitted = fit_searched(
            lambda lams, weights, epochs, snaps: self._train(x, yt, prior, lams, weights, n_classes, epochs, snaps),
            y, n_classes, lam=self.lam, lam_grid=self.lam_grid, epochs=self.epochs, folds=self.cv_folds, seed=self.seed,
            name=self.display_name, class_weight=self.class_weight)
        self.lam_, self.epochs_, self.cv_accuracy_ = fitted.lam, fitted.epochs, fitted.cv_accuracy
        self.W_, self.protos_, self.radii_, self.losses_ = fitted.W, fitted.protos, fitted.radii, fitted.losses
        self.stopped_ = fitted.stopped
        return self

    def _fit_multi_label(self, train: Features, Y: np.ndarray, content_free: Features) -> DecT:
        """Multi-label DecT: the same decoder, each label's score a logit trained with one sigmoid per label
        (binary cross-entropy). λ (``lam="cv"``: {1/k} ∪ ``lam_grid``, k the mean positives per label) and the
        training length are chosen with the threshold, by the micro-F1 of out-of-fold probabilities from
        ``cv_folds`` folds that spread every label (:func:`label_folds`); all folds and λ values train as one
        batch, as in the single-label fit. The chosen (λ, length)'s out-of-fold probabilities place the threshold
        (``oof_``)."""
        n, n_classes = Y.shape
        counts = class_counts("DecT", self.labels_, Y)  # every label needs an example
        x, prior = self._inputs(train, content_free)
        yt = torch.from_numpy(Y.astype(np.int64))
        shots = float(counts.mean())
        grid = (sorted({round(1.0 / shots, 6), *self.lam_grid}) if self.lam == "cv"
                else [1.0 / shots if self.lam is None else float(self.lam)])
        lengths = self._epoch_choices()
        searched = len(grid) > 1 or len(lengths) > 1 or self.threshold == "cv"
        k = int(min(self.cv_folds, counts.min())) if searched else 0
        k = k if k >= 2 else 0  # a fold needs every label's texts in its training part: none with fewer than 2
        folds = torch.from_numpy(label_folds(Y, k, self.seed)) if k else None
        held = torch.tensor([f for _ in grid for f in range(k)], dtype=torch.int64)
        weights = torch.cat([(folds[None] != held[:, None]).float() if k else torch.zeros(0, n),
                             torch.ones(len(grid), n)])
        lams = torch.tensor([g for g in grid for _ in range(k)] + list(grid), dtype=torch.float32)
        snaps: dict[int, Any] = dict.fromkeys(lengths if k else (max(lengths),))
        losses = self._train(x, yt, prior, lams, weights, n_classes, max(snaps), snaps)
        best: tuple[float, int, int] | None = None  # (-micro-F1, length, λ index)
        table: dict[int, dict[float, float]] = {}
        oof: dict[tuple[int, int], np.ndarray] = {}
        for e, snap in snaps.items():
            scores = snap[-1]
            table[e] = {}
            for i, lam in enumerate(grid):
                final = scores[k * len(grid) + i]
                if not bool(torch.isfinite(final).all()):
                    continue
                if not k:
                    best = (0.0, e, i) if best is None else best
                    continue
                P = np.zeros((n, n_classes))
                rows = scores[i * k:(i + 1) * k]
                if not bool(torch.isfinite(rows).all()):
                    continue
                for f in range(k):
                    out = (folds == f).numpy()
                    P[out] = sigmoid(rows[f].numpy()[out])
                _, f1 = choose_threshold(P, Y, self.allow_empty_)
                table[e][lam], oof[(e, i)] = f1, P
                key = (-round(f1, 6), e, i)
                best = key if best is None or key < best else best
        if best is None:
            raise EdgetuneError(f"{self.display_name}: every decoder went non-finite; lower the learning rate")
        _, e, i = best
        row = k * len(grid) + i
        weights_of, protos, radii, _ = snaps[e]
        self.W_, self.protos_ = weights_of(row).numpy().copy(), protos[row].numpy().copy()
        self.radii_ = radii[row].numpy().copy()
        self.lam_, self.epochs_, self.cv_accuracy_ = float(grid[i]), e, table.get(e, {})
        self.losses_, self.stopped_ = losses[row, :e].tolist(), None
        self.oof_ = oof.get((e, i))
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        if features.hidden.shape[1] != self.W_.shape[1]:
            raise EdgetuneError(f"features have {features.hidden.shape[1]} dimensions; this decoder expects "
                                f"{self.W_.shape[1]} (was it trained on another model?)")
        with torch.no_grad():
            out = self._batched_scores(
                self._standardise(features.hidden), torch.from_numpy(self.W_)[None],
                torch.from_numpy(self.protos_)[None], torch.from_numpy(self.radii_)[None],
                torch.from_numpy(self._prior(features.scores).astype(np.float32)), torch.tensor([self.lam_]))
        return out[0].numpy()

    def state(self) -> dict[str, np.ndarray]:
        return {"W": self.W_, "protos": self.protos_, "radii": self.radii_, "mean": self.mean_, "std": self.std_,
                "content_free": self.content_free_, "batch_prior": self.batch_prior_,
                "lam": np.array([self.lam_], dtype=np.float32)}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        c, d, k = len(self.labels_), self.hidden_dim_, self.proto_dim
        return {"W": (k, d), "protos": (c, k), "radii": (c,), "mean": (d,), "std": (d,), "content_free": (None, c),
                "lam": (1,)}

    def check_state(self, tensors: dict[str, np.ndarray]) -> str | None:
        prior = tensors.get("batch_prior")
        if prior is not None and prior.shape != (1, len(self.labels_)):
            return f"saved array 'batch_prior' has shape {prior.shape}, not (1, {len(self.labels_)})"
        if not np.isfinite(tensors["lam"]).all():
            return f"its saved λ is {float(tensors['lam'][0])}"
        return None

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.W_, self.protos_, self.radii_ = tensors["W"], tensors["protos"], tensors["radii"]
        self.mean_, self.std_ = tensors["mean"], tensors["std"]
        self.content_free_ = tensors["content_free"]
        self.batch_prior_ = tensors.get("batch_prior", np.zeros((1, len(self.protos_)), np.float32))
        self.lam_ = float(tensors["lam"][0])
