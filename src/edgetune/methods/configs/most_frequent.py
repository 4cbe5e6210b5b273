"""The most-frequent-label floor's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.config import OutputEdgeConfig, param, text


@dataclass(kw_only=True)
class MostFrequentConfig(OutputEdgeConfig):
    name: ClassVar[str] = "most_frequent"
    estimator: ClassVar[str] = "MostFrequent"
    display_name: ClassVar[str] = "most frequent label"
    multi_label: ClassVar[bool] = True

    label: str | None = param(None, "the label to predict for every input (None: the training sample's most frequent; "
                                    "e.g. the label a pool's counts or a user's experience says dominates)", text())
