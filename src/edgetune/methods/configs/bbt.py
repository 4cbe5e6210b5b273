"""BBT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import ProjectedConfig


@dataclass(kw_only=True)
class BBTConfig(ProjectedConfig):
    name: ClassVar[str] = "bbt"
    estimator: ClassVar[str] = "BBT"
    display_name: ClassVar[str] = "BBT"
    smoke_params: ClassVar[dict[str, Any]] = {"budget": 4, "popsize": 2, "intrinsic_dim": 4, "prompt_tokens": 2,
                                              "eval_every": 2}
