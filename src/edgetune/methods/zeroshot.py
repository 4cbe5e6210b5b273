"""Zero-shot prompting: the label word the model scores highest, raw or calibrated.

Both use no training labels; ``fit`` only records the prompt (and, for the calibrated variant, the
content-free prior). They exist as the floor every tuned method must beat, computed from the very same
cached features. On multi-label data each label's probability is its label word's share of the label words'
probability mass (raw or calibrated), predicted when it reaches ``threshold``; ``threshold="cv"`` reads the
training sample's scores to place that one number (the only thing taken from the labels, and the only reason the
training prompts are queried).
"""

from __future__ import annotations

import numpy as np

from ..backends import Features
from .configs.zeroshot import CalibratedConfig, ZeroShotConfig
from .core.decoders import calibrate, log_softmax
from .core.multilabel import logit
from .core.output_edge import OutputEdgeMethod
from .core.registry import register


@register
class ZeroShot(OutputEdgeMethod):
    """Argmax of the label-word scores at the label position.

    """

    config = ZeroShotConfig

    uses_content_free = False
    learns_from_labels = False

    @property
    def uses_training_prompts(self) -> bool:  # type: ignore[override]
        return _reads_sample(self)

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> ZeroShot:
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        return _per_label(self, features.scores)


@register
class CalibratedZeroShot(OutputEdgeMethod):
    """Label-word scores after contextual calibration with content-free inputs (Zhao et al., 2021).

    Attributes
    ----------
    content_free_ : ndarray of shape (m, C)
        Label-word scores of the content-free prompts (the prior).
    """

    config = CalibratedConfig

    learns_from_labels = False

    @property
    def uses_training_prompts(self) -> bool:  # type: ignore[override]
        return _reads_sample(self)

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> CalibratedZeroShot:
        self.content_free_ = content_free.scores.astype(np.float32)
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        return _per_label(self, calibrate(features.scores, self.content_free_))

    def state(self) -> dict[str, np.ndarray]:
        return {"content_free": self.content_free_}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {"content_free": (None, len(self.labels_))}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.content_free_ = tensors["content_free"]


def _reads_sample(method: OutputEdgeMethod) -> bool:
    """Whether a zero-shot fit read the training prompts: only to place a multi-label threshold (``"cv"``)."""
    return bool(getattr(method, "multi_label_", False)) and method.threshold == "cv"


def _per_label(method: OutputEdgeMethod, scores: np.ndarray) -> np.ndarray:
    """Class scores as they are; multi-label: each label word's probability as a logit (its sigmoid is that
    probability)."""
    if not getattr(method, "multi_label_", False):
        return scores
    return logit(np.exp(log_softmax(scores))).astype(np.float32)
