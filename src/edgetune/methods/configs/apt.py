"""Adaptive prefix tuning's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import GradientConfig, learning_rate, param, whole


@dataclass(kw_only=True)
class APTConfig(GradientConfig):
    name: ClassVar[str] = "apt"
    estimator: ClassVar[str] = "APT"
    display_name: ClassVar[str] = "adaptive prefix tuning"
    budget_rule: ClassVar[str | None] = ("L·2·l·kv ≤ budget_tokens·d: the largest prefix length l "
                                                  "(the prefix only; the gates' L·((d+1)·l + 1) come on top)")
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1, "budget_tokens": 8}

    prefix_tokens: int | None = param(None, "prefix length l per layer (None: the largest within budget_tokens·d)",
                                      whole(1, none_ok=True))
    budget_tokens: int = param(100, "trainable-parameter budget when prefix_tokens is None: budget_tokens·d",
                               whole(1))
    lr: float = param(5e-3, "AdamW rate of the prefixes and gates", learning_rate())
