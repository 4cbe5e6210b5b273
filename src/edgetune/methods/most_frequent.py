"""The floor that reads no text: every input gets the label the training sample holds most often (scikit-learn's
``DummyClassifier(strategy="most_frequent")``; for multi-label data the one most frequent label, not
DummyClassifier's per-label majority, which is the empty set for any label held by fewer than half the texts).

Written here rather than wrapping ``DummyClassifier`` so that it runs through the same output-edge path as every
other method (the runner's records, saving, the same test prompts); it costs no model query of its own (the
prompts' features are read only because every output-edge method is handed them).
"""

from __future__ import annotations

import numpy as np

from ..backends import Features
from ..errors import DataError
from .configs.most_frequent import MostFrequentConfig
from .core.decoders import label_counts
from .core.output_edge import OutputEdgeMethod
from .core.registry import register

#: the score of the chosen label (and minus it, the others'): far from any threshold
CONFIDENT = 8.0


@register
class MostFrequent(OutputEdgeMethod):
    """Predict the training sample's most frequent label for every input (ties: the first in label order), or the
    label named by ``label``.

    Attributes
    ----------
    counts_ : ndarray of shape (C,)
        How many training texts carry each label.
    """

    config = MostFrequentConfig

    uses_training_prompts = False
    uses_content_free = False
    learns_from_labels = False  # a floor: it counts labels but reads no text (no query, nothing to cross-validate)
    parametric = False
    fixed_state = ("counts",)

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> MostFrequent:
        self.counts_ = label_counts(y, len(self.labels_)).astype(np.int64)
        if self.label is not None:
            if self.label not in self.labels_:
                raise DataError(f"most_frequent: label {self.label!r} is not one of the labels {list(self.labels_)}")
            self.counts_ = np.zeros(len(self.labels_), np.int64)  # the named label is the one predicted
            self.counts_[self.labels_.index(self.label)] = 1
        return self

    def _fit_thresholds(self, train: Features, Y: np.ndarray, content_free: Features) -> None:
        self.threshold_, self.cv_micro_f1_ = 0.5, None  # the scores are ±CONFIDENT: any threshold decides alike
        self.thresholds_ = np.full(Y.shape[1], 0.5, dtype=np.float32)

    def decision_features(self, features: Features) -> np.ndarray:
        row = np.full(len(self.labels_), -CONFIDENT, dtype=np.float32)
        row[int(np.argmax(self.counts_))] = CONFIDENT
        return np.repeat(row[None], len(features), axis=0)

    def state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts_}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {"counts": (len(self.labels_),)}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.counts_ = tensors["counts"]
