"""SetFit's declaration (its parameters keep SetFit's own names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import MethodConfig, class_weight_param, learning_rate, param, seed, threshold_param, whole


@dataclass(kw_only=True)
class SetFitConfig(MethodConfig):
    name: ClassVar[str] = "setfit"
    estimator: ClassVar[str] = "SetFit"
    display_name: ClassVar[str] = "SetFit"
    multi_label: ClassVar[bool] = True
    edge: ClassVar[str] = "body"
    needs: ClassVar[str] = "encoder"
    default_model: ClassVar[str | None] = "minilm-l6"
    smoke_params: ClassVar[dict[str, Any]] = {"max_steps": 2, "batch_size": 4}

    batch_size: int = param(16, "contrastive pairs per step (SetFit's batch_size)", whole(1))
    num_epochs: int = param(1, "epochs over the contrastive pairs (SetFit's num_epochs)", whole(1))
    body_learning_rate: float = param(2e-5, "rate of the encoder body (SetFit's body_learning_rate)", learning_rate())
    num_iterations: int | None = param(None, "pairs per example (None: SetFit's default pair sampling)",
                                       whole(1, none_ok=True))
    max_steps: int = param(-1, "most body steps (-1: the epochs decide)")
    labels: tuple[str, ...] | None = param(None, "label order when fitting on plain texts (None: sorted labels of y)",
                                           kind="list")
    class_weight: str | None = class_weight_param()
    seed: int = param(0, "seed of the pair sampling and the head", seed())
    progress: bool = param(True, "show a progress bar while training")
    threshold: float | str = threshold_param(0.5)

    def check_together(self) -> None:
        if not (type(self.max_steps) is int and self.max_steps == -1):
            whole(1)(self.name, "max_steps", self.max_steps)
        labels = self.labels
        if labels is not None and (not isinstance(labels, list | tuple)
                                   or not all(isinstance(lab, str) for lab in labels)
                                   or len(set(labels)) != len(labels) or len(labels) < 2):
            raise self.fail(f"labels must be a list of two or more distinct label names or None, not {labels!r}")
