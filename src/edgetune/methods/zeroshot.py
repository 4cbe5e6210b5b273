"""Zero-shot prompting: the label word the model scores highest, raw or calibrated.

Both use no training labels; ``fit`` only records the prompt (and, for the calibrated variant, the
content-free prior). They exist as the floor every tuned method must beat, computed from the very same
cached features.
"""

from __future__ import annotations

import numpy as np

from ..backends import Features
from .configs.zeroshot import CalibratedConfig, ZeroShotConfig
from .core.decoders import calibrate
from .core.output_edge import OutputEdgeMethod
from .core.registry import register


@register
class ZeroShot(OutputEdgeMethod):
    """Argmax of the label-word scores at the label position.

    """

    config = ZeroShotConfig

    uses_training_prompts = False
    uses_content_free = False
    learns_from_labels = False

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> ZeroShot:
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        return features.scores


@register
class CalibratedZeroShot(OutputEdgeMethod):
    """Label-word scores after contextual calibration with content-free inputs (Zhao et al., 2021).

    Attributes
    ----------
    content_free_ : ndarray of shape (m, C)
        Label-word scores of the content-free prompts (the prior).
    """

    config = CalibratedConfig

    uses_training_prompts = False
    learns_from_labels = False

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> CalibratedZeroShot:
        self.content_free_ = content_free.scores.astype(np.float32)
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        return calibrate(features.scores, self.content_free_)

    def state(self) -> dict[str, np.ndarray]:
        return {"content_free": self.content_free_}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {"content_free": (None, len(self.labels_))}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.content_free_ = tensors["content_free"]
