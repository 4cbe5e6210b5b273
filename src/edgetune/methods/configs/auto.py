"""``auto``'s declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...metrics import ALL_METRICS
from ..core.config import (
    OutputEdgeConfig,
    class_weight_param,
    names,
    number,
    one_of,
    param,
    positive,
    seed,
    text,
    whole,
)
from .ensemble import check_params, member_specs

#: the output-edge candidates, cheapest first (a tie goes to the earlier one unless ``prefer`` is tied). Not mpd by
#: default: it queries every later input under four prompts (4× the prediction cost) and one fit takes ~8 s on
#: trec at 16 shots (25× DecT's), so cross-validating it alone would take a minute; add it where that is worth it.
CANDIDATES = ("zeroshot", "calibrated", "batch_calibrated", "centroid", "knn", "linear_probe", "dect")


@dataclass(kw_only=True)
class AutoConfig(OutputEdgeConfig):
    name: ClassVar[str] = "auto"
    estimator: ClassVar[str] = "Auto"
    display_name: ClassVar[str] = "auto"
    multi_label: ClassVar[bool] = True
    smoke_params: ClassVar[dict[str, Any]] = {"candidates": ["calibrated", "centroid", "dect:epochs=3"],
                                              "ensemble": 2}

    candidates: tuple[Any, ...] = param(CANDIDATES, "the output-edge methods compared, cheapest first: names, "
                                                    "'name:key=value,...' or mappings with 'name' (mpd only where "
                                                    "the task has several templates)")
    metric: str = param("accuracy", "what cross-validation compares: accuracy, macro_f1 or balanced_accuracy "
                                    "(multi-label data: micro_f1 for accuracy, or macro_f1, samples_f1, "
                                    "subset_accuracy)", one_of(*ALL_METRICS))
    cv_folds: int = param(4, "most folds of the stratified cross-validation (fewer when a label has fewer "
                             "examples; every label needs 2)", whole(2))
    cv_repeats: int = param(2, "repeats of the k-fold split, each with other folds", whole(1))
    tie: float = param(3.0, "a candidate within this many standard errors (of its per-fold difference from the "
                            "best) ties with the best; a tie goes to prefer, else to the cheapest", number(0))
    prefer: str | None = param("dect", "the candidate a tie goes to first, where it is a candidate (None: the "
                                       "cheapest)", text())
    ensemble: int = param(3, "soft voting over the best this many candidates as one more candidate (0: none)",
                          whole(0))
    models: tuple[str, ...] | None = param(None, "more models to range over, e.g. minilm-l6: the sample is extracted "
                                                 "once per model and (method, model) pairs are candidates",
                                           names, kind="list")
    time_budget: float | None = param(None, "seconds that admit the costly candidates on an in-process model, by "
                                            "measured fit times (None: output-edge candidates only)",
                                      positive(none_ok=True))
    costly: tuple[Any, ...] = param(("setfit", "adept"), "what a time_budget may admit, cheapest first: SetFit on "
                                                         "its encoder, input-edge methods", kind="list")
    class_weight: str | None = class_weight_param()
    fallback: str | None = param(None, "the method fitted instead when the sample is too small to cross-validate "
                                       "(e.g. dect; None: an error)", text())
    seed: int = param(0, "seed of the folds, and of every candidate that takes one", seed())

    def check_together(self) -> None:
        super().check_together()
        from . import declared

        known = declared()
        specs = member_specs(self.candidates, self.name, at_least=1, what="candidates")
        for name, params in specs:
            config = known.get(name)
            if config is None:
                raise self.fail(f"candidate {name!r} is not a method (known: {', '.join(sorted(known))})")
            if config.edge != "output" or name in (self.name, "ensemble"):
                raise self.fail(f"candidate {name!r} is not an output-edge method (costlier ones go in costly=, "
                                "and the ensemble is built by ensemble=)")
            check_params(self, name, config, params, "candidate")
        for name, params in member_specs(self.costly, self.name, at_least=0, what="costly"):
            config = known.get(name)
            if config is None or config.edge == "output":
                raise self.fail(f"costly candidate {name!r} must be SetFit or an input-edge method")
            check_params(self, name, config, params, "costly candidate")
        if self.prefer is not None and self.prefer not in known:
            raise self.fail(f"prefer {self.prefer!r} is not a method (known: {', '.join(sorted(known))})")
        if self.fallback is not None and (self.fallback not in known or known[self.fallback].edge != "output"
                                          or self.fallback == self.name):
            raise self.fail(f"fallback {self.fallback!r} must be an output-edge method, e.g. 'dect'")

