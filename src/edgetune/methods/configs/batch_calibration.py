"""Batch-calibrated zero-shot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.config import OutputEdgeConfig, one_of, param


@dataclass(kw_only=True)
class BatchCalibratedConfig(OutputEdgeConfig):
    name: ClassVar[str] = "batch_calibrated"
    estimator: ClassVar[str] = "BatchCalibratedZeroShot"
    display_name: ClassVar[str] = "batch-calibrated zero-shot"

    batch: str = param("train", "inputs the prior is estimated from: 'train' (the training sample) or 'test' (each "
                                "call's own inputs)", one_of("train", "test"))
