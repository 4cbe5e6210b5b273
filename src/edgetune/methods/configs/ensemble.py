"""The ensemble's declaration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.config import OutputEdgeConfig, ParamError, check_number, param, seed, value_from_text


def member_specs(members: Any, owner: str = "ensemble", *, at_least: int = 2,
                 what: str = "members") -> list[tuple[str, dict[str, Any]]]:
    """``members`` as (method name, parameters) pairs. A member is a method name (``"dect"``), a name with
    parameters (``"dect:template=1,epochs=30"``, as the command line gives it) or a mapping
    (``{"name": "dect", "template": 1}``, as Python and YAML give it); ``at_least`` of them (``what``: how the
    error names the list)."""
    if isinstance(members, str) or not isinstance(members, list | tuple) or len(members) < at_least:
        many = {0: "methods", 1: "one method or more", 2: "at least two methods"}.get(at_least,
                                                                                     f"at least {at_least} methods")
        raise ParamError(f"{owner}: {what} must be a list of {many} (names, 'name:key=value,...' "
                         f"or mappings with 'name'), not {members!r}")
    out = []
    for spec in members:
        if isinstance(spec, str):
            name, _, rest = spec.partition(":")
            params: dict[str, Any] = {}
            for item in filter(None, (x.strip() for x in rest.split(","))):
                key, eq, value = item.partition("=")
                if not eq or not key.strip():
                    raise ParamError(f"{owner}: member {spec!r}: parameters are key=value, not {item!r}")
                params[key.strip()] = value_from_text(value.strip())
            out.append((name.strip(), params))
        elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            out.append((spec["name"], {k: v for k, v in spec.items() if k != "name"}))
        else:
            raise ParamError(f"{owner}: a member is a method name or a mapping with 'name', not {spec!r}")
    return out


def check_params(owner: Any, name: str, config: Any, params: dict[str, Any], what: str = "member") -> None:
    """A member's (or ``auto`` candidate's) own parameters, checked by its declaration: known names, valid values."""
    params = config.renamed(params, warn=False)
    unknown = sorted(set(params) - set(config.param_names()))
    if unknown:
        raise owner.fail(f"{what} {name!r} has no parameter(s) {unknown}")
    config(**params).check()


@dataclass(kw_only=True)
class EnsembleConfig(OutputEdgeConfig):
    name: ClassVar[str] = "ensemble"
    estimator: ClassVar[str] = "Ensemble"
    display_name: ClassVar[str] = "ensemble"
    smoke_params: ClassVar[dict[str, Any]] = {"members": ["calibrated", {"name": "dect", "epochs": 3}]}

    members: tuple[Any, ...] = param(("dect", "linear_probe"), "the output-edge methods whose class probabilities "
                                     "are averaged: names, 'name:key=value,...' or mappings with 'name'")
    weights: tuple[float, ...] | None = param(None, "one weight per member (None: equal weights)", kind="list")
    seed: int = param(0, "seed given to every member that takes one and sets none", seed())

    def check_together(self) -> None:
        super().check_together()
        from . import declared

        known = declared()
        for name, params in member_specs(self.members, self.name):
            config = known.get(name)
            if config is None:
                raise self.fail(f"member {name!r} is not a method (known: {', '.join(sorted(known))})")
            if config.edge != "output" or name == self.name:
                raise self.fail(f"member {name!r} is not an output-edge method: an ensemble averages methods that "
                                "share one extraction of the model's features")
            check_params(self, name, config, params, "member")
        if self.weights is not None:
            if isinstance(self.weights, str) or not isinstance(self.weights, list | tuple) or len(
                    self.weights) != len(self.members):
                raise self.fail(f"weights must be one number per member ({len(self.members)}), not {self.weights!r}")
            for w in self.weights:
                check_number(self.name, "weights", w, 0, low_open=True)
