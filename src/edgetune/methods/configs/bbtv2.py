"""BBTv2's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import ProjectedConfig, param, whole


@dataclass(kw_only=True)
class BBTv2Config(ProjectedConfig):
    name: ClassVar[str] = "bbtv2"
    estimator: ClassVar[str] = "BBTv2"
    display_name: ClassVar[str] = "BBTv2"
    smoke_params: ClassVar[dict[str, Any]] = {"budget": 4, "popsize": 2, "intrinsic_dim": 4, "prompt_tokens": 2,
                                              "eval_every": 2}

    intrinsic_dim: int = param(500, "numbers searched per block; the whole search has blocks × this", whole(1))
