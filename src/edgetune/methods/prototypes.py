"""Prototype baselines on the cached hidden states, at zero training cost: nearest class centroid and kNN.

Both read the same features as DecT (the hidden state at the label position, one query per training
prompt) and learn nothing by gradient. The hidden states are centred on the training mean and scaled to
unit length first: a decoder-only LM's last hidden states share a large common direction (and a few
outlier dimensions), which would otherwise dominate every cosine.

- ``centroid``: cosine similarity to each class's mean (normalised) training vector.
- ``knn``: scikit-learn's ``KNeighborsClassifier`` (cosine distance, ``weights``) over the training
  vectors; ``k="auto"`` takes the number of shots per class (the smallest class's count). The training
  vectors are the model: they are saved as arrays (safetensors) and the classifier is rebuilt on load.
"""

from __future__ import annotations

import numpy as np

from ..backends import Features
from .configs.prototypes import CentroidConfig, KNNConfig
from .core.output_edge import OutputEdgeMethod
from .core.registry import register


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
        cents = np.zeros((len(self.labels_), z.shape[1]))
        for c in range(len(self.labels_)):
            if np.any(y == c):
                cents[c] = z[y == c].mean(axis=0)
        norms = np.linalg.norm(cents, axis=1, keepdims=True)
        self.centroids_ = (cents / np.maximum(norms, 1e-12)).astype(np.float32)
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        scores = self._unit(features.hidden) @ self.centroids_.T.astype(np.float64)
        scores[:, ~self.centroids_.any(axis=1)] = -np.inf  # a class absent from training is never predicted
        return scores.astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "centroids": self.centroids_}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {"mean": (self.hidden_dim_,), "centroids": (len(self.labels_), self.hidden_dim_)}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.mean_, self.centroids_ = tensors["mean"], tensors["centroids"]


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
        counts = np.bincount(self.targets_)
        k = int(counts[counts > 0].min()) if self.k == "auto" else int(self.k)
        self.k_ = np.array([min(k, len(self.targets_))])
        self._build()
        return self

    def _build(self) -> None:
        from sklearn.neighbors import KNeighborsClassifier

        self.clf_ = KNeighborsClassifier(n_neighbors=int(self.k_[0]), metric="cosine", weights=self.weights)
        self.clf_.fit(self.vectors_, np.asarray(self.targets_).astype(np.int64))

    def decision_features(self, features: Features) -> np.ndarray:
        proba = self.clf_.predict_proba(self._unit(features.hidden).astype(np.float32))
        scores = np.full((len(features), len(self.labels_)), -np.inf, dtype=np.float32)
        scores[:, self.clf_.classes_.astype(np.int64)] = proba  # classes seen in training; the rest are never predicted
        return scores

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "vectors": self.vectors_, "targets": self.targets_, "k": self.k_}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {"mean": (self.hidden_dim_,), "vectors": (None, self.hidden_dim_), "targets": (None,), "k": (1,)}

    def check_state(self, tensors: dict[str, np.ndarray]) -> str | None:
        n, targets, k = len(tensors["vectors"]), tensors["targets"], tensors["k"]
        if len(targets) != n:
            return f"{len(targets)} saved targets for {n} saved training vectors"
        if targets.dtype.kind not in "iu" or (n and not (targets.min() >= 0 and targets.max() < len(self.labels_))):
            return f"its saved targets are not label indices below {len(self.labels_)}"
        if k.dtype.kind not in "iu" or not 1 <= int(k[0]) <= n:
            return f"its saved k ({k[0]}) is not between 1 and the {n} training vectors"
        return None

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.mean_, self.vectors_, self.targets_ = tensors["mean"], tensors["vectors"], tensors["targets"]
        self.k_ = tensors["k"]
        self._build()
