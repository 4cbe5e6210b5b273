"""DecT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import PrototypeDecoderConfig, number, one_of, param, threshold_param


@dataclass(kw_only=True)
class DecTConfig(PrototypeDecoderConfig):
    name: ClassVar[str] = "dect"
    estimator: ClassVar[str] = "DecT"
    display_name: ClassVar[str] = "DecT"
    multi_label: ClassVar[bool] = True
    companions: ClassVar[tuple[str, ...]] = ("zeroshot", "calibrated", "linear_probe")
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 5}

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
    threshold: float | str = threshold_param()
