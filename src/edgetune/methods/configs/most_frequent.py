"""The most-frequent-label floor's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.config import OutputEdgeConfig


@dataclass(kw_only=True)
class MostFrequentConfig(OutputEdgeConfig):
    name: ClassVar[str] = "most_frequent"
    estimator: ClassVar[str] = "MostFrequent"
    display_name: ClassVar[str] = "most frequent label"
    multi_label: ClassVar[bool] = True
