"""Adaptation methods: one module each, registered by name in :data:`METHODS` (the only list).

A method is a module here with one class (``@register``) and its declaration in :mod:`.configs`; the framework
lives in :mod:`.core`. Names are imported on first use (PEP 562): importing this package, or a declaration in
:mod:`.configs`, loads no torch; ``METHODS`` (or any method class, exported under its class name, e.g.
``from edgetune.methods import DecT``) imports every method module first, so none can be left out.
"""

from __future__ import annotations

import importlib
from typing import Any

_CORE = {
    "Costs": "estimator", "Method": "estimator", "NotFittedError": "estimator",
    "ParamError": "config", "MethodConfig": "config",
    "METHODS": "registry", "display_name": "registry", "get_method": "registry", "register": "registry",
    "load": "persistence",
}


def _estimators() -> dict[str, str]:
    """Class name -> registry name, from the declarations (no method imported)."""
    from .configs import declared

    return {config.estimator: name for name, config in declared().items()}


def __getattr__(name: str) -> Any:
    if name in _CORE:
        module = importlib.import_module(f"{__name__}.core.{_CORE[name]}")
        if name == "METHODS":
            module.load_all()
        value = getattr(module, name)
    elif name in (estimators := _estimators()):
        from .core.registry import get_method

        value = get_method(estimators[name])
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CORE) | set(_estimators()))


__all__ = sorted([*_CORE, *_estimators()])
