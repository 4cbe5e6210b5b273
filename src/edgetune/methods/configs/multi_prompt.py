"""Multi-prompt DecT's declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import PrototypeDecoderConfig, param, positive, whole


@dataclass(kw_only=True)
class MultiPromptConfig(PrototypeDecoderConfig):
    name: ClassVar[str] = "mpd"
    estimator: ClassVar[str] = "MultiPromptDecoder"
    display_name: ClassVar[str] = "multi-prompt DecT"
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 3, "templates": ("{text} In summary, it was {mask}",
                                                                         "{text} All in all, it was {mask}")}
    lam_none_ok: ClassVar[bool] = False

    prompts: int = param(4, "how many of the task's templates to query with (the main one first)", whole(1))
    templates: tuple[str, ...] | None = param(None, "the templates themselves, overriding the task's", kind="list")
    word_sets: int = param(1, "how many of the task's label-word sets are averaged in the prior", whole(1))
    lam: float | str = param("cv", "weight λ of the averaged calibrated scores ('cv': chosen by cross-validation)")
    ot_eps: float = param(0.1, "entropic regularisation of the optimal transport", positive())
    ot_iters: int = param(10, "Sinkhorn iterations", whole(1))

    def check_together(self) -> None:
        super().check_together()
        templates = self.templates
        if isinstance(templates, list | tuple) and not templates:
            raise self.fail("templates is empty; give a list of prompts, or None for the task's")
        if templates is not None and (isinstance(templates, str) or not isinstance(templates, list | tuple)
                                      or not all(isinstance(t, str) for t in templates)):
            raise self.fail(f"templates must be a non-empty list of prompts or None, not {templates!r}")
