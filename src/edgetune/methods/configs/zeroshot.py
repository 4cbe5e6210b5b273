"""Zero-shot and calibrated zero-shot: the prompt alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.config import OutputEdgeConfig, threshold_param


@dataclass(kw_only=True)
class ZeroShotConfig(OutputEdgeConfig):
    name: ClassVar[str] = "zeroshot"
    estimator: ClassVar[str] = "ZeroShot"
    display_name: ClassVar[str] = "zero-shot"
    multi_label: ClassVar[bool] = True
    threshold: float | str = threshold_param()


@dataclass(kw_only=True)
class CalibratedConfig(OutputEdgeConfig):
    name: ClassVar[str] = "calibrated"
    estimator: ClassVar[str] = "CalibratedZeroShot"
    display_name: ClassVar[str] = "calibrated zero-shot"
    multi_label: ClassVar[bool] = True
    threshold: float | str = threshold_param()
