"""The class centroid's and kNN's declarations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.config import OutputEdgeConfig, one_of, param, threshold_param, whole


@dataclass(kw_only=True)
class CentroidConfig(OutputEdgeConfig):
    name: ClassVar[str] = "centroid"
    estimator: ClassVar[str] = "Centroid"
    display_name: ClassVar[str] = "class centroid"
    multi_label: ClassVar[bool] = True
    threshold: float | str = threshold_param()


@dataclass(kw_only=True)
class KNNConfig(OutputEdgeConfig):
    name: ClassVar[str] = "knn"
    estimator: ClassVar[str] = "KNN"
    display_name: ClassVar[str] = "kNN"
    multi_label: ClassVar[bool] = True

    k: int | str = param("auto", "neighbours ('auto': the smallest class's count in the training sample)")
    weights: str = param("distance", "neighbour weighting: 'distance' or 'uniform' (scikit-learn's weights)",
                         one_of("distance", "uniform"))
    threshold: float | str = threshold_param()

    def check_together(self) -> None:
        if self.k != "auto":
            whole(1)(self.name, "k", self.k)
