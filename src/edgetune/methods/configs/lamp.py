"""LAMP's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import PROMPT_INITS, FactoredPromptConfig, learning_rate, one_of, param, whole


@dataclass(kw_only=True)
class LAMPConfig(FactoredPromptConfig):
    name: ClassVar[str] = "lamp"
    estimator: ClassVar[str] = "LAMP"
    display_name: ClassVar[str] = "LAMP"
    budget_rule: ClassVar[str | None] = ("r·(m + d) + r² (core='full') or r·(m + d + 1) (core='diagonal') ≤ "
                                         "budget_tokens·d: the largest rank r ≤ min(m, d) for prompt_tokens m")
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1, "prompt_tokens": 4,
                                              "budget_tokens": 8}
    aliases: ClassVar[dict[str, str]] = {"lr": "lr_prompt"}

    lr_prompt: float | str = param(0.003, "AdamW rate of every factor ('auto': the worst-case factor bound, "
                                          "factor_rates)", learning_rate(auto=True))
    prompt_tokens: int = param(100, "prompt length m before pooling", whole(1))
    rank: int | None = param(None, "rank r of the prompt (None: the largest within budget_tokens·d, at most "
                                   "min(m, d))", whole(1, none_ok=True))
    core: str = param("diagonal", "the core Q between U and V: 'diagonal' (r numbers) or 'full' (r × r)",
                      one_of("full", "diagonal"))
    pool: int = param(2, "window of the average pooling (the model reads m / pool vectors); must divide m", whole(1))
    budget_tokens: int = param(100, "trainable-parameter budget when rank is None: budget_tokens·d", whole(1))
    prompt_init: str = param("vocab", "how the soft prompt starts: 'text', 'vocab', 'range' or 'zeros'",
                             one_of(*PROMPT_INITS))

    def check_together(self) -> None:
        super().check_together()
        if self.prompt_tokens % self.pool:
            raise self.fail(f"pool={self.pool} must divide prompt_tokens={self.prompt_tokens}")
