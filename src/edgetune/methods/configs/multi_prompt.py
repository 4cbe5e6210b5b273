"""Multi-prompt DecT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import OutputEdgeConfig, check_lam, epoch_choices, learning_rate, param, positive, seed, whole


@dataclass(kw_only=True)
class MultiPromptConfig(OutputEdgeConfig):
    name: ClassVar[str] = "mpd"
    estimator: ClassVar[str] = "MultiPromptDecoder"
    display_name: ClassVar[str] = "multi-prompt DecT"
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 3, "templates": ("{text} In summary, it was {mask}",
                                                                         "{text} All in all, it was {mask}")}

    prompts: int = param(4, "how many of the task's templates to query with (the main one first)", whole(1))
    templates: tuple[str, ...] | None = param(None, "the templates themselves, overriding the task's", kind="list")
    word_sets: int = param(1, "how many of the task's label-word sets are averaged in the prior", whole(1))
    proto_dim: int = param(128, "width of the projected space the prototypes live in", whole(1))
    lr: float = param(0.01, "Adam learning rate of the decoder", learning_rate())
    epochs: int | tuple[int, ...] = param((10, 20, 30), "full-batch Adam steps, or candidate lengths chosen with λ by "
                                                        "cross-validation")
    lam: float | str = param("cv", "weight λ of the averaged calibrated scores ('cv': chosen by cross-validation)")
    lam_grid: tuple[float, ...] = param((0.25, 0.5, 1.0, 2.0, 4.0), "the λ values 'cv' chooses among, besides "
                                                                     "1/shots")
    cv_folds: int = param(4, "folds of the stratified cross-validation on the training sample", whole(2))
    ot_eps: float = param(0.1, "entropic regularisation of the optimal transport", positive())
    ot_iters: int = param(10, "Sinkhorn iterations", whole(1))
    threads: int | None = param(1, "torch threads while fitting (None: torch's setting)", whole(1, none_ok=True))
    seed: int = param(0, "seed of the initialisation and of the cross-validation folds", seed())

    def check_together(self) -> None:
        if not epoch_choices(self.epochs):
            raise self.fail(f"epochs must be a non-negative integer or a non-empty list of them, not {self.epochs!r}")
        check_lam(self, none_ok=False)
        templates = self.templates
        if isinstance(templates, list | tuple) and not templates:
            raise self.fail("templates is empty; give a list of prompts, or None for the task's")
        if templates is not None and (isinstance(templates, str) or not isinstance(templates, list | tuple)
                                      or not all(isinstance(t, str) for t in templates)):
            raise self.fail(f"templates must be a non-empty list of prompts or None, not {templates!r}")
