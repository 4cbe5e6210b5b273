"""LoRA's declaration (PEFT's names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import GradientConfig, learning_rate, names, number, param, whole


@dataclass(kw_only=True)
class LoRAConfig(GradientConfig):
    name: ClassVar[str] = "lora"
    estimator: ClassVar[str] = "LoRA"
    display_name: ClassVar[str] = "LoRA"
    budget_rule: ClassVar[str | None] = "r·Σ(in+out) over the adapted layers closest to budget_tokens·d (rank ≥ 1)"
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1, "budget_tokens": 8}
    aliases: ClassVar[dict[str, str]] = {"alpha": "lora_alpha"}

    rank: int | None = param(None, "LoRA rank r (None: the one whose trainable count is closest to the budget)",
                             whole(1, none_ok=True))
    lora_alpha: float | None = param(None, "LoRA scaling numerator, PEFT's lora_alpha (None: 2·r)",
                                     number(0, low_open=True, none_ok=True))
    lora_dropout: float = param(0.0, "dropout on the adapters' input", number(0, 1, high_open=True))
    target_modules: tuple[str, ...] | None = param(None, "names of the modules to adapt (None: PEFT's default for "
                                                         "the architecture)", names, kind="list")
    budget_tokens: int = param(100, "trainable-parameter budget when rank is None: budget_tokens·d", whole(1))
    lr: float = param(2e-3, "AdamW rate of the adapters", learning_rate())
