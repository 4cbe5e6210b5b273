"""Full fine-tuning's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import GradientConfig, learning_rate, param


@dataclass(kw_only=True)
class FineTuneConfig(GradientConfig):
    name: ClassVar[str] = "finetune"
    estimator: ClassVar[str] = "FineTune"
    display_name: ClassVar[str] = "full fine-tuning"
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1}

    lr: float = param(1e-5, "AdamW rate of every weight", learning_rate())
