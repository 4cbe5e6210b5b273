"""Zero-shot prompting: the label word the model scores highest, raw or calibrated.

Both use no training labels; ``fit`` only records the prompt (and, for the calibrated variant, the
content-free prior). They exist as the floor every tuned method must beat, computed from the very same
cached features.
"""

from __future__ import annotations

import numpy as np

from ..backends import Features
from .base import calibrate, register
from .output_edge import OutputEdgeMethod


@register
class ZeroShot(OutputEdgeMethod):
    """Argmax of the label-word scores at the label position.

    Parameters
    ----------
    model : str or Backend, default=None
        The frozen model: a packaged name, a local folder, a hub id or a backend (None: ``default_model``).
    template : str, default=None
        Prompt template (None: the task's).
    label_words : mapping or str, default=None
        One label word per label, as a mapping or ``"label:word,..."`` (None: the task's).
    """

    name = "zeroshot"
    display_name = "zero-shot"
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

    Parameters
    ----------
    model : str or Backend, default=None
        The frozen model: a packaged name, a local folder, a hub id or a backend (None: ``default_model``).
    template : str, default=None
        Prompt template (None: the task's).
    label_words : mapping or str, default=None
        One label word per label, as a mapping or ``"label:word,..."`` (None: the task's).

    Attributes
    ----------
    content_free_ : ndarray of shape (m, C)
        Label-word scores of the content-free prompts (the prior).
    """

    name = "calibrated"
    display_name = "calibrated zero-shot"
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
