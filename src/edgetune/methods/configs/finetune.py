"""Full fine-tuning's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import GradientConfig, learning_rate, one_of, param


@dataclass(kw_only=True)
class FineTuneConfig(GradientConfig):
    name: ClassVar[str] = "finetune"
    estimator: ClassVar[str] = "FineTune"
    display_name: ClassVar[str] = "full fine-tuning"
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1}

    lr: float = param(1e-5, "AdamW rate of every weight", learning_rate())
    weights: str = param("float32", "format of the trained copy: 'float32' (exact AdamW, 4 bytes a weight) or "
                         "'model' (the model's own: a bfloat16 model trains in bfloat16 with float32 moments and "
                         "stochastically rounded updates, half the weight memory)", one_of("float32", "model"))
