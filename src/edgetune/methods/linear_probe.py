"""Linear probe: logistic regression on the same hidden states DecT sees.

scikit-learn's ``LogisticRegression`` (L2, lbfgs) on standardised features; the learned coefficients are
saved as arrays, and prediction is a matrix product, so no pickled estimator is ever stored.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..backends import Backend, Features
from ..errors import DataError
from .base import check_positive_int, check_positive_number, check_seed, logistic_head, register
from .output_edge import OutputEdgeMethod


@register
class LinearProbe(OutputEdgeMethod):
    """Multinomial logistic regression on standardised hidden states (``C``: inverse L2 strength).

    Parameters
    ----------
    model : str or Backend, default=None
        The frozen model: a packaged name, a local folder, a hub id or a backend (None: ``default_model``).
    template : str, default=None
        Prompt template (None: the task's).
    label_words : mapping or str, default=None
        One label word per label, as a mapping or ``"label:word,..."`` (None: the task's).
    C : float, default=1.0
        Inverse L2 regularisation strength (scikit-learn's ``C``).
    max_iter : int, default=2000
        Most lbfgs iterations.
    seed : int, default=0
        ``random_state`` of the logistic regression.

    Attributes
    ----------
    coef_ : ndarray of shape (C, d)
        Coefficients.
    intercept_ : ndarray of shape (C,)
        Intercepts.
    mean_, std_ : ndarray of shape (d,)
        Feature standardisation.
    """

    def _validate_params(self) -> None:
        super()._validate_params()
        check_positive_number(self, "C")
        check_positive_int(self, "max_iter")
        check_seed(self)

    name = "linear_probe"
    display_name = "linear probe"

    def __init__(self, model: str | Backend | None = None, *, template: str | None = None,
                 label_words=None, C: float = 1.0, max_iter: int = 2000, seed: int = 0) -> None:
        super().__init__(model, template=template, label_words=label_words)
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> LinearProbe:
        present = sorted(set(np.asarray(y).tolist()))
        if len(present) < 2:  # scikit-learn's own error would be a traceback
            raise DataError(f"{self.name} needs training examples of at least two labels; the training data has only "
                            f"{', '.join(repr(self.labels_[i]) for i in present) or 'none'}")
        h = train.hidden.astype(np.float64)
        self.mean_ = h.mean(axis=0)
        self.std_ = h.std(axis=0) + 1e-6
        n_classes = len(self.labels_)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        clf.fit((h - self.mean_) / self.std_, y)
        coef, bias = logistic_head(clf, n_classes)
        self.coef_, self.intercept_ = coef.astype(np.float32), bias.astype(np.float32)
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


