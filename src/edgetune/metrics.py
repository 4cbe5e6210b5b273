"""The measures records, reports and ``auto`` read: accuracy, macro-F1 and balanced accuracy, computed by
``sklearn.metrics`` from label indices. Importing this module loads neither numpy nor scikit-learn (the command
line reads the names)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import EdgetuneError

#: the metric names ``--metric`` / ``metric=`` accept, in the order tables show them
METRIC_NAMES = ("accuracy", "macro_f1", "balanced_accuracy")
#: how a table heads each metric
METRIC_TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy"}


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
    if name not in METRIC_NAMES:
        raise EdgetuneError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")
    return str(name)


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
