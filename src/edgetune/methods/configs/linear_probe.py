"""The linear probe's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.config import OutputEdgeConfig, class_weight_param, param, positive, seed, threshold_param, whole


@dataclass(kw_only=True)
class LinearProbeConfig(OutputEdgeConfig):
    name: ClassVar[str] = "linear_probe"
    estimator: ClassVar[str] = "LinearProbe"
    display_name: ClassVar[str] = "linear probe"
    multi_label: ClassVar[bool] = True

    C: float = param(1.0, "inverse L2 regularisation strength (scikit-learn's C)", positive())
    max_iter: int = param(2000, "most lbfgs iterations", whole(1))
    class_weight: str | None = class_weight_param()
    seed: int = param(0, "random_state of the logistic regression", seed())
    threshold: float | str = threshold_param()
