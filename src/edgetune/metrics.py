"""The measures records, reports and ``auto`` read: accuracy, macro-F1 and balanced accuracy, computed by
``sklearn.metrics`` from label indices; for multi-label data (several labels per text) micro-F1, macro-F1,
samples-F1 and subset accuracy from 0/1 indicator matrices. Importing this module loads neither numpy nor
scikit-learn (the command line reads the names)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import EdgetuneError

#: the metric names ``--metric`` / ``metric=`` accept, in the order tables show them
METRIC_NAMES = ("accuracy", "macro_f1", "balanced_accuracy")
#: how a table heads each metric
#: the measures of a multi-label cell, in the order tables show them (the first is its headline)
MULTI_LABEL_METRICS = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy")
#: every name ``--metric`` / ``metric=`` accepts
ALL_METRICS = tuple(dict.fromkeys(METRIC_NAMES + MULTI_LABEL_METRICS))
METRIC_TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy",
                 "micro_f1": "micro-F1", "samples_f1": "samples-F1", "subset_accuracy": "subset accuracy"}


if TYPE_CHECKING:
    import numpy as np


def _scorers() -> dict[str, Callable[[np.ndarray, np.ndarray, Sequence[int]], float]]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    def balanced(y: np.ndarray, p: np.ndarray, labels: Sequence[int]) -> float:
        import warnings

        with warnings.catch_warnings():  # scikit-learn warns of predicted labels absent from y: harmless here
            warnings.simplefilter("ignore")
            return float(balanced_accuracy_score(y, p))

    return {
        "accuracy": lambda y, p, labels: float(accuracy_score(y, p)),
        # labels=: a class absent from both y and p still counts (0 F1), as it does for a user's whole label set
        "macro_f1": lambda y, p, labels: float(f1_score(y, p, labels=list(labels), average="macro",
                                                        zero_division=0)),
        "balanced_accuracy": balanced,
    }


def check_metric(name: Any) -> str:
    """``name`` if it is a known metric, else a one-line :class:`EdgetuneError` listing them."""
    if name not in ALL_METRICS:
        raise EdgetuneError(f"unknown metric {name!r}; known: {', '.join(ALL_METRICS)}")
    return str(name)


def multi_label_scores(Y_true: Any, Y_pred: Any) -> dict[str, float]:
    """Every measure of :data:`MULTI_LABEL_METRICS` of a predicted 0/1 indicator matrix against the true one (both
    (n, C)). macro-F1 counts every label, one never predicted nor present as 0; samples-F1 of a text with no true
    and no predicted label is 1 (it got nothing wrong)."""
    import warnings

    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    y, p = np.asarray(Y_true, dtype=np.int64), np.asarray(Y_pred, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"micro_f1": float(f1_score(y, p, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(y, p, average="macro", zero_division=0)),
                "samples_f1": float(f1_score(y, p, average="samples", zero_division=1)),
                "subset_accuracy": float(accuracy_score(y, p))}


def multi_label_score(name: str, Y_true: Any, Y_pred: Any) -> float:
    """One multi-label measure (``accuracy`` is the subset accuracy, as scikit-learn's ``accuracy_score``)."""
    name = "subset_accuracy" if check_metric(name) == "accuracy" else name
    if name not in MULTI_LABEL_METRICS:
        raise EdgetuneError(f"metric {name!r} is for one label per text; a multi-label one is one of "
                            f"{', '.join(MULTI_LABEL_METRICS)}")
    return multi_label_scores(Y_true, Y_pred)[name]


def per_label_counts(Y_true: Any, Y_pred: Any) -> dict[str, list[int]]:
    """Per label: true positives, false positives and false negatives (a multi-label cell's confusion)."""
    import numpy as np

    y, p = np.asarray(Y_true, dtype=bool), np.asarray(Y_pred, dtype=bool)
    return {"tp": (y & p).sum(0).tolist(), "fp": (~y & p).sum(0).tolist(), "fn": (y & ~p).sum(0).tolist()}


def score(name: str, y_true: Any, y_pred: Any, n_classes: int) -> float:
    """One metric of predicted label indices against true ones (over all ``n_classes`` labels)."""
    import numpy as np

    return _scorers()[check_metric(name)](np.asarray(y_true), np.asarray(y_pred), range(n_classes))


def scores(y_true: Any, y_pred: Any, n_classes: int) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES`, by name."""
    import numpy as np

    y, p = np.asarray(y_true), np.asarray(y_pred)
    return {name: f(y, p, range(n_classes)) for name, f in _scorers().items()}


def confusion(y_true: Any, y_pred: Any, n_classes: int) -> list[list[int]]:
    """The (C, C) confusion matrix (rows: true label, columns: predicted), as lists for a record."""
    import numpy as np
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(n_classes))).tolist()


def per_class(matrix: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision and recall from a confusion matrix (rows true, columns predicted); 0 where undefined."""
    import numpy as np

    m = np.asarray(matrix, dtype=np.float64)
    predicted, actual = m.sum(0), m.sum(1)
    diag = np.diag(m)
    precision = np.divide(diag, predicted, out=np.zeros_like(diag), where=predicted > 0)
    recall = np.divide(diag, actual, out=np.zeros_like(diag), where=actual > 0)
    return precision, recall
