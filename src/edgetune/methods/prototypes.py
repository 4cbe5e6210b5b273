"""Prototype baselines on the cached hidden states, at zero training cost: nearest class centroid and kNN.

Both read the same features as DecT (the hidden state at the label position, one query per training
prompt) and learn nothing by gradient. The hidden states are centred on the training mean and scaled to
unit length first: a decoder-only LM's last hidden states share a large common direction (and a few
outlier dimensions), which would otherwise dominate every cosine.

- ``centroid``: cosine similarity to each class's mean (normalised) training vector.
- ``knn``: scikit-learn's ``KNeighborsClassifier`` (cosine distance, ``weights``) over the training
  vectors; ``k="auto"`` takes the number of shots per class (the smallest class's count). The training
  vectors are the model: they are saved as arrays (safetensors) and the classifier is rebuilt on load.

On multi-label data: ``centroid`` compares each text with two centroids per label, of the training texts that carry
the label and of those that do not (a nearest-centroid rule per label; the label's logit is ``TEMPERATURE`` × the
difference of the two cosines), and ``knn`` gives each label the (distance-weighted) share of the k neighbours that
carry it (scikit-learn's multi-output ``KNeighborsClassifier``). ``threshold`` turns either into decisions.
"""

from __future__ import annotations

import numpy as np

from ..backends import Features
from .configs.prototypes import CentroidConfig, KNNConfig
from .core.decoders import label_counts
from .core.multilabel import logit
from .core.output_edge import OutputEdgeMethod
from .core.registry import register

#: multi-label centroid: logit per unit of cosine difference (cosines of few-shot centroids differ by tenths)
TEMPERATURE = 10.0


class _Normalised(OutputEdgeMethod):
    """Centres hidden states on the training mean and scales them to unit length."""

    fixed_state = ("mean",)

    def _unit(self, hidden: np.ndarray) -> np.ndarray:
        z = hidden.astype(np.float64) - self.mean_
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def _fit_mean(self, train: Features) -> np.ndarray:
        self.mean_ = train.hidden.astype(np.float64).mean(axis=0)
        return self._unit(train.hidden)


@register
class Centroid(_Normalised):
    """Nearest class centroid by cosine similarity.

    Attributes
    ----------
    centroids_ : ndarray of shape (C, d)
        Each class's normalised mean training vector.
    mean_ : ndarray of shape (d,)
        Training mean the hidden states are centred on.
    """

    config = CentroidConfig

    uses_content_free = False

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> Centroid:
        z = self._fit_mean(train)
        if y.ndim == 2:
            self.centroids_ = _unit_rows(y.T.astype(np.float64) @ z)
            self.negatives_ = _unit_rows((1 - y).T.astype(np.float64) @ z)
            return self
        cents = np.zeros((len(self.labels_), z.shape[1]))
        for c in range(len(self.labels_)):
            if np.any(y == c):
                cents[c] = z[y == c].mean(axis=0)
        norms = np.linalg.norm(cents, axis=1, keepdims=True)
        self.centroids_ = (cents / np.maximum(norms, 1e-12)).astype(np.float32)
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        if getattr(self, "multi_label_", False):
            z = self._unit(features.hidden)
            diff = z @ self.centroids_.T.astype(np.float64) - z @ self.negatives_.T.astype(np.float64)
            return (TEMPERATURE * diff).astype(np.float32)
        scores = self._unit(features.hidden) @ self.centroids_.T.astype(np.float64)
        scores[:, ~self.centroids_.any(axis=1)] = -np.inf  # a class absent from training is never predicted
        return scores.astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        multi = {"negatives": self.negatives_} if getattr(self, "multi_label_", False) else {}
        return {"mean": self.mean_, "centroids": self.centroids_, **multi}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        shape = (len(self.labels_), self.hidden_dim_)
        return {"mean": (self.hidden_dim_,), "centroids": shape,
                **({"negatives": shape} if getattr(self, "multi_label_", False) else {})}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.mean_, self.centroids_ = tensors["mean"], tensors["centroids"]
        if getattr(self, "multi_label_", False):
            self.negatives_ = tensors["negatives"]


@register
class KNN(_Normalised):
    """k nearest training examples by cosine distance (scikit-learn).

    Attributes
    ----------
    k_ : ndarray of shape (1,)
        The k used.
    vectors_, targets_ : ndarray of shape (n, d), (n,)
        The training set itself.
    mean_ : ndarray of shape (d,)
        Training mean the hidden states are centred on.
    """

    config = KNNConfig

    uses_content_free = False
    parametric = False
    fixed_state = ("mean", "vectors", "targets", "k")  # stored training data and k, not learned parameters

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> KNN:
        self.vectors_ = self._fit_mean(train).astype(np.float32)
        self.targets_ = np.asarray(y, dtype=np.int64)
        counts = label_counts(self.targets_, len(self.labels_))
        k = int(counts[counts > 0].min()) if self.k == "auto" else int(self.k)
        self.k_ = np.array([min(k, len(self.targets_))])
        self._build()
        return self

    def _build(self) -> None:
        from sklearn.neighbors import KNeighborsClassifier

        self.clf_ = KNeighborsClassifier(n_neighbors=int(self.k_[0]), metric="cosine", weights=self.weights)
        self.clf_.fit(self.vectors_, np.asarray(self.targets_).astype(np.int64))

    def decision_features(self, features: Features) -> np.ndarray:
        if self.targets_.ndim == 2:  # multi-label: each label's share of the neighbours, as a logit
            per_label = self.clf_.predict_proba(self._unit(features.hidden).astype(np.float32))
            share = np.column_stack([p[:, list(c).index(1)] if 1 in c else np.zeros(len(p))
                                     for p, c in zip(per_label, self.clf_.classes_, strict=True)])
            return logit(share, eps=1e-4).astype(np.float32)
        proba = self.clf_.predict_proba(self._unit(features.hidden).astype(np.float32))
        scores = np.full((len(features), len(self.labels_)), -np.inf, dtype=np.float32)
        scores[:, self.clf_.classes_.astype(np.int64)] = proba  # classes seen in training; the rest are never predicted
        return scores

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "vectors": self.vectors_, "targets": self.targets_, "k": self.k_}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        targets = (None, len(self.labels_)) if getattr(self, "multi_label_", False) else (None,)
        return {"mean": (self.hidden_dim_,), "vectors": (None, self.hidden_dim_), "targets": targets, "k": (1,)}

    def check_state(self, tensors: dict[str, np.ndarray]) -> str | None:
        n, targets, k = len(tensors["vectors"]), tensors["targets"], tensors["k"]
        if len(targets) != n:
            return f"{len(targets)} saved targets for {n} saved training vectors"
        top = 2 if targets.ndim == 2 else len(self.labels_)
        if targets.dtype.kind not in "iu" or (n and not (targets.min() >= 0 and targets.max() < top)):
            return f"its saved targets are not label indices below {len(self.labels_)}"
        if k.dtype.kind not in "iu" or not 1 <= int(k[0]) <= n:
            return f"its saved k ({k[0]}) is not between 1 and the {n} training vectors"
        return None

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.mean_, self.vectors_, self.targets_ = tensors["mean"], tensors["vectors"], tensors["targets"]
        self.k_ = tensors["k"]
        self._build()


def _unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    return (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)).astype(np.float32)
