"""ADePT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import SoftPromptConfig, learning_rate, number, param, whole


@dataclass(kw_only=True)
class ADePTConfig(SoftPromptConfig):
    name: ClassVar[str] = "adept"
    estimator: ClassVar[str] = "ADePT"
    display_name: ClassVar[str] = "ADePT"
    budget_rule: ClassVar[str | None] = "m·d + (2d+1)·r + d ≤ budget_tokens·d: the largest rank r for prompt_tokens m"
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1, "prompt_tokens": 4,
                                              "budget_tokens": 8}

    prompt_tokens: int = param(60, "soft-prompt length m (0: the offset network alone)", whole(0))
    rank: int | None = param(None, "bottleneck r of the offset network (None: the largest within the budget)",
                             whole(1, none_ok=True))
    budget_tokens: int = param(100, "trainable-parameter budget when rank is None: budget_tokens·d", whole(1))
    lr_network: float = param(1e-4, "AdamW rate of the offset network", learning_rate())
    dropout: float = param(0.1, "dropout on the bottleneck pre-activation while training",
                           number(0, 1, high_open=True))

    def check_together(self) -> None:
        super().check_together()
        if self.prompt_tokens >= self.max_length:
            raise self.fail(f"prompt_tokens ({self.prompt_tokens}) must be shorter than max_length "
                            f"({self.max_length})")
