"""DePT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import SoftPromptConfig, learning_rate, param, positive, whole


@dataclass(kw_only=True)
class DePTConfig(SoftPromptConfig):
    name: ClassVar[str] = "dept"
    estimator: ClassVar[str] = "DePT"
    display_name: ClassVar[str] = "DePT"
    budget_rule: ClassVar[str | None] = ("m·d + (s+d)·r ≤ budget_tokens·d: the largest rank r for prompt_tokens m, "
                                         "positions s")
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1, "prompt_tokens": 4,
                                              "budget_tokens": 8, "positions": 16}
    aliases: ClassVar[dict[str, str]] = {"alpha": "offset_scale"}

    prompt_tokens: int = param(60, "soft-prompt length m", whole(1))
    rank: int | None = param(None, "rank r of the offsets (None: the largest within the budget)",
                             whole(1, none_ok=True))
    positions: int = param(256, "input positions s that get an offset", whole(1))
    budget_tokens: int = param(100, "trainable-parameter budget when rank is None: budget_tokens·d", whole(1))
    offset_scale: float = param(8.0, "offset scaling numerator: the offsets are multiplied by offset_scale/√r",
                                positive())
    lr_offsets: float = param(1e-4, "AdamW rate of the offset factors A and B", learning_rate())
