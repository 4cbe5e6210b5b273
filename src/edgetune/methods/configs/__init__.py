"""Every method's declaration, one module per method module, importable without torch.

:func:`declared` finds them by reading this package (a config is a :class:`MethodConfig` subclass with a
``name``); the command line builds its flags and ``--help`` from them, and the package root its exports, before
any method (or torch) is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from functools import cache

from ..core.config import MethodConfig


@cache
def declared() -> dict[str, type[MethodConfig]]:
    """Registry name -> config, for every method this package declares."""
    out: dict[str, type[MethodConfig]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, MethodConfig) and value.__module__ == module.__name__
                    and value.__dict__.get("name")):
                out[value.name] = value
    return dict(sorted(out.items()))


def declarations() -> dict[str, type[MethodConfig]]:
    """:func:`declared`, plus the config of every method registered at run time (e.g. in a notebook or a test)
    once the registry has been imported."""
    out = dict(declared())
    registry = sys.modules.get("edgetune.methods.core.registry")
    if registry is not None:
        out.update({name: cls.config for name, cls in registry.METHODS.items()})
    return dict(sorted(out.items()))


def multi_label_methods() -> list[str]:
    """The methods that fit multi-label data (several labels per text), by name."""
    return [name for name, config in declarations().items() if config.multi_label]
