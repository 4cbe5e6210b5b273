"""Prompt tuning's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import SoftPromptConfig


@dataclass(kw_only=True)
class PromptTuningConfig(SoftPromptConfig):
    name: ClassVar[str] = "pt"
    estimator: ClassVar[str] = "PromptTuning"
    display_name: ClassVar[str] = "prompt tuning"
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1, "prompt_tokens": 4}
    aliases: ClassVar[dict[str, str]] = {"lr": "lr_prompt"}
