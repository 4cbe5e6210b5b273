"""DecT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import (
    OutputEdgeConfig,
    check_lam,
    epoch_choices,
    learning_rate,
    number,
    one_of,
    param,
    seed,
    whole,
)


@dataclass(kw_only=True)
class DecTConfig(OutputEdgeConfig):
    name: ClassVar[str] = "dect"
    estimator: ClassVar[str] = "DecT"
    display_name: ClassVar[str] = "DecT"
    companions: ClassVar[tuple[str, ...]] = ("zeroshot", "calibrated", "linear_probe")
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 5}

    proto_dim: int = param(128, "width of the projected space the prototypes live in", whole(1))
    lr: float = param(0.01, "Adam learning rate of the decoder", learning_rate())
    epochs: int | tuple[int, ...] = param((10, 20, 30), "full-batch Adam steps, or candidate lengths chosen with λ by "
                                                        "cross-validation")
    lam: float | str | None = param("cv", "weight λ of the prompt's calibrated scores ('cv': chosen by "
                                          "cross-validation; None: 1/shots)")
    lam_grid: tuple[float, ...] = param((0.25, 0.5, 1.0, 2.0, 4.0), "the λ values 'cv' chooses among, besides "
                                                                     "1/shots")
    cv_folds: int = param(4, "folds of the stratified cross-validation on the training sample", whole(2))
    calibrate: bool | str = param(True, "the prompt's prior: content-free prompts (true), none (false) or the "
                                        "training sample's scores ('batch')", one_of(True, False, "batch"),
                                  kind="value")
    normalize: str = param("standardize", "how hidden states are scaled before the projection: 'standardize', "
                                          "'center' or 'none'", one_of("standardize", "center", "none"))
    prototypes: str = param("mean", "'mean': learned prototypes started at the class means; 'random': fixed random "
                                     "ones (the reference)", one_of("mean", "random"))
    weight_decay: float = param(0.0, "Adam weight decay", number(0))
    solver: str = param("span", "'span': learn the projection inside the span of the training inputs; 'full': "
                                "whole", one_of("span", "full"))
    threads: int | None = param(1, "torch threads while fitting (None: torch's setting)", whole(1, none_ok=True))
    seed: int = param(0, "seed of the initialisation and of the cross-validation folds", seed())

    def check_together(self) -> None:
        check_lam(self)
        if not epoch_choices(self.epochs):
            raise self.fail(f"epochs must be a non-negative integer or a non-empty list of them, not {self.epochs!r}")
