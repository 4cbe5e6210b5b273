"""Linear probe: logistic regression on the same hidden states DecT sees.

scikit-learn's ``LogisticRegression`` (L2, lbfgs) on standardised features; the learned coefficients are
saved as arrays, and prediction is a matrix product, so no pickled estimator is ever stored.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..backends import Backend, Features
from ..backends.models import DEFAULT_MODEL
from .base import OutputEdgeMethod, register


@register
class LinearProbe(OutputEdgeMethod):
    """Multinomial logistic regression on standardised hidden states (``C``: inverse L2 strength)."""

    name = "linear_probe"

    def __init__(self, model: str | Backend = DEFAULT_MODEL, *, template: str | None = None,
                 label_words=None, C: float = 1.0, max_iter: int = 2000, seed: int = 0) -> None:
        super().__init__(model, template=template, label_words=label_words)
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> LinearProbe:
        h = train.hidden.astype(np.float64)
        self.mean_ = h.mean(axis=0)
        self.std_ = h.std(axis=0) + 1e-6
        n_classes = len(self.labels_)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        clf.fit((h - self.mean_) / self.std_, y)
        coef = np.zeros((n_classes, h.shape[1]))
        bias = np.full(n_classes, -1e9)
        if len(clf.classes_) == 2 and n_classes >= 2:
            # sklearn keeps one row for two classes: score(c1) - score(c0) = w.x + b
            coef[clf.classes_[1]] = clf.coef_[0]
            bias[clf.classes_[1]] = clf.intercept_[0]
            bias[clf.classes_[0]] = 0.0
        else:
            coef[clf.classes_] = clf.coef_
            bias[clf.classes_] = clf.intercept_
        self.coef_, self.intercept_ = coef.astype(np.float32), bias.astype(np.float32)
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        z = (features.hidden - self.mean_) / self.std_
        return (z @ self.coef_.T + self.intercept_).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "std": self.std_, "coef": self.coef_, "intercept": self.intercept_}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.mean_, self.std_ = tensors["mean"], tensors["std"]
        self.coef_, self.intercept_ = tensors["coef"], tensors["intercept"]


