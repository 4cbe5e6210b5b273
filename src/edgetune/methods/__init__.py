"""Adaptation methods, one module each, registered by name in :data:`METHODS` (the only list).

Every module of this package is imported here, so a method module cannot be left out; each method class
is then exported under its class name (``from edgetune.methods import DecT``).
"""

import importlib as _importlib
import pkgutil as _pkgutil

from .base import METHODS, Costs, Method, ParamError, display_name, get_method, load, register

for _info in _pkgutil.iter_modules(__path__):
    if _info.name != "__main__":  # `python -m edgetune.methods` rewrites the catalog (see edgetune.catalog)
        _importlib.import_module(f"{__name__}.{_info.name}")

globals().update({_cls.__name__: _cls for _cls in METHODS.values()})

__all__ = ["METHODS", "Costs", "Method", "ParamError", "display_name", "get_method", "load", "register",
           *sorted(_cls.__name__ for _cls in METHODS.values())]
