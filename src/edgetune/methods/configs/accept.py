"""ACCEPT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import FactoredPromptConfig, learning_rate, param, whole


@dataclass(kw_only=True)
class ACCEPTConfig(FactoredPromptConfig):
    name: ClassVar[str] = "accept"
    estimator: ClassVar[str] = "ACCEPT"
    display_name: ClassVar[str] = "ACCEPT"
    budget_rule: ClassVar[str | None] = (
        "K·r·(m + t) ≤ prompt_tokens·d (prompt) and K'·r'·(s + t') ≤ (budget_tokens − prompt_tokens)·d "
        "(offsets): the largest codebook sizes r, r'")
    smoke_params: ClassVar[dict[str, Any]] = {
        "steps": 2, "batch_size": 4, "eval_every": 1, "prompt_tokens": 4, "budget_tokens": 8, "positions": 8,
        "sub_dim": 8, "offset_sub_dim": 8}

    prompt_tokens: int = param(60, "prompt length m", whole(1))
    sub_dim: int = param(32, "slice width of the prompt's codebooks; must divide d", whole(1))
    codebook_size: int | None = param(None, "codewords per prompt slice (None: the largest within prompt_tokens·d)",
                                      whole(1, none_ok=True))
    offset_sub_dim: int = param(32, "slice width of the offset's codebooks; must divide d", whole(1))
    offset_size: int | None = param(None, "codewords per offset slice (None: the largest within the rest of the "
                                          "budget)", whole(1, none_ok=True))
    positions: int = param(256, "input positions that get an offset", whole(1))
    budget_tokens: int = param(100, "trainable-parameter budget budget_tokens·d, prompt and offsets", whole(1))
    lr_offsets: float = param(1e-3, "AdamW rate of the offset factors", learning_rate())

    def check_together(self) -> None:
        super().check_together()
        if self.codebook_size is None and self.offset_size is None and self.prompt_tokens >= self.budget_tokens:
            raise self.fail(f"budget_tokens={self.budget_tokens} leaves nothing for the offsets after "
                            f"prompt_tokens={self.prompt_tokens}; raise budget_tokens or lower prompt_tokens")
