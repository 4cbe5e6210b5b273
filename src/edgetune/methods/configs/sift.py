"""SIFT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import GradientConfig, learning_rate, names, number, param, whole


@dataclass(kw_only=True)
class SIFTConfig(GradientConfig):
    name: ClassVar[str] = "sift"
    estimator: ClassVar[str] = "SIFT"
    display_name: ClassVar[str] = "SIFT"
    budget_rule: ClassVar[str | None] = ("exactly budget_tokens·d weight components (or density × each adapted "
                                         "matrix)")
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1, "budget_tokens": 8}

    budget_tokens: int = param(100, "trainable components = budget_tokens·d (ignored when density is given)",
                               whole(1))
    density: float | None = param(None, "fraction of each adapted matrix's components to train",
                                  number(0, 1, low_open=True, none_ok=True))
    target_modules: tuple[str, ...] | None = param(None, "names (last part) of the nn.Linear modules to adapt "
                                                         "(None: all but the output layer)", names, kind="list")
    select_batches: int = param(1, "batches whose gradients choose the components", whole(1))
    lr: float = param(1e-3, "AdamW rate of the increments", learning_rate())
