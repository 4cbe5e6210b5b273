"""Linear probe: logistic regression on the same hidden states DecT sees.

scikit-learn's ``LogisticRegression`` (L2, lbfgs) on standardised features; the learned coefficients are
saved as arrays, and prediction is a matrix product, so no pickled estimator is ever stored. On multi-label data it
is one-vs-rest: one binary logistic regression per label (:func:`~edgetune.methods.core.decoders.one_vs_rest`).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..backends import Features
from ..errors import DataError
from .configs.linear_probe import LinearProbeConfig
from .core.decoders import logistic_head, one_vs_rest
from .core.output_edge import OutputEdgeMethod
from .core.registry import register


@register
class LinearProbe(OutputEdgeMethod):
    """Multinomial logistic regression on standardised hidden states (``C``: inverse L2 strength).

    Attributes
    ----------
    coef_ : ndarray of shape (C, d)
        Coefficients.
    intercept_ : ndarray of shape (C,)
        Intercepts.
    mean_, std_ : ndarray of shape (d,)
        Feature standardisation.
    """

    config = LinearProbeConfig

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> LinearProbe:
        if y.ndim == 2:
            return self._fit_one_vs_rest(train, y)
        present = sorted(set(np.asarray(y).tolist()))
        if len(present) < 2:  # scikit-learn's own error would be a traceback
            raise DataError(f"{self.name} needs training examples of at least two labels; the training data has only "
                            f"{', '.join(repr(self.labels_[i]) for i in present) or 'none'}")
        h = train.hidden.astype(np.float64)
        self.mean_ = h.mean(axis=0)
        self.std_ = h.std(axis=0) + 1e-6
        n_classes = len(self.labels_)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed,
                                 class_weight=self.class_weight)
        clf.fit((h - self.mean_) / self.std_, y)
        coef, bias = logistic_head(clf, n_classes)
        self.coef_, self.intercept_ = coef.astype(np.float32), bias.astype(np.float32)
        return self

    def _fit_one_vs_rest(self, train: Features, Y: np.ndarray) -> LinearProbe:
        h = train.hidden.astype(np.float64)
        self.mean_ = h.mean(axis=0)
        self.std_ = h.std(axis=0) + 1e-6
        self.coef_, self.intercept_ = one_vs_rest(
            (h - self.mean_) / self.std_, Y, lambda: LogisticRegression(
                C=self.C, max_iter=self.max_iter, random_state=self.seed, class_weight=self.class_weight))
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        z = (features.hidden - self.mean_) / self.std_
        return (z @ self.coef_.T + self.intercept_).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "std": self.std_, "coef": self.coef_, "intercept": self.intercept_}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        c, d = len(self.labels_), self.hidden_dim_
        return {"mean": (d,), "std": (d,), "coef": (c, d), "intercept": (c,)}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.mean_, self.std_ = tensors["mean"], tensors["std"]
        self.coef_, self.intercept_ = tensors["coef"], tensors["intercept"]


