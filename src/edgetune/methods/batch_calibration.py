"""Zero-shot prompting with batch calibration (Zhou et al., 2023, "Batch Calibration: Rethinking Calibration
for In-Context Learning and Prompt Engineering").

A prompt biases the model towards some label words whatever the input. Contextual calibration (the
``calibrated`` method) estimates that bias from content-free inputs ("N/A", "", "[MASK]"); batch calibration
estimates it from real inputs: each class's prior is the mean of its label-word probability (normalised over
the label words) over a batch of unlabelled inputs, and every score is divided by it (in log space, as
edgetune's contextual calibration does, so the two differ only in where the prior comes from).

``batch`` says which inputs:

- ``"train"`` (default): the unlabelled training sample — prompts the few-shot run queries anyway, so it costs
  no extra query; the labels are not used.
- ``"test"``: the inputs being predicted, each call to ``predict``/``class_scores`` on its own
  (transductive: a prediction depends on the other inputs of the call; a call with a single input is
  refused, since its own scores would be its prior). Give it a label that says so in a bench config (e.g.
  ``label: batch_calibrated_test``), as ``benchmarks/output_edge_family.yaml`` does.
"""

from __future__ import annotations

import numpy as np

from ..backends import Features
from .configs.batch_calibration import BatchCalibratedConfig
from .core.config import ParamError
from .core.decoders import batch_calibrate, batch_prior
from .core.output_edge import OutputEdgeMethod
from .core.registry import register

BATCHES = ("train", "test")


@register
class BatchCalibratedZeroShot(OutputEdgeMethod):
    """Label-word scores after batch calibration (see the module docstring); uses no training labels.

    Attributes
    ----------
    prior_ : ndarray of shape (1, C)
        Log prior from the training sample (``batch="train"``).
    """

    config = BatchCalibratedConfig

    uses_content_free = False
    learns_from_labels = False
    fixed_state = ("prior",)  # a statistic of unlabelled inputs, not a learned parameter

    @property
    def uses_training_prompts(self) -> bool:  # type: ignore[override]
        return self.batch == "train"

    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> BatchCalibratedZeroShot:
        self.prior_ = batch_prior(train.scores).astype(np.float32)
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        if self.batch == "train":
            return batch_calibrate(features.scores, self.prior_)
        if len(features) < 2:
            raise ParamError(f"{self.name}: batch='test' estimates the prior from the inputs being predicted; "
                             "give it a batch of them, not one (or use batch='train')")
        return batch_calibrate(features.scores, batch_prior(features.scores))

    def state(self) -> dict[str, np.ndarray]:
        return {"prior": self.prior_}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {"prior": (1, len(self.labels_))}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.prior_ = tensors["prior"]
