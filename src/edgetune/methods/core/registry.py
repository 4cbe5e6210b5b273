"""The method registry: registry name -> method class, the only list of methods.

A method is one module of :mod:`edgetune.methods` with one class decorated by :func:`register`, plus its
declaration in :mod:`edgetune.methods.configs`; :func:`load_all` imports every method module, so none can be
left out. The command line, the bench, the reports and the tests read the registry (or, before torch is
imported, the declarations) instead of keeping lists of their own.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re

from ...errors import EdgetuneError
from .config import EDGES, NEEDS, MethodConfig
from .estimator import Method

METHODS: dict[str, type[Method]] = {}
#: the subpackages of ``edgetune.methods`` that hold the framework, not methods
FRAMEWORK = ("core", "configs")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: check ``cls``'s declarations and make it available by its ``name`` everywhere
    (``edgetune run``, the bench, :func:`load`, the reports and the contract tests)."""
    problems = []
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{cls!r} is not a Method subclass")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        problems.append("`name` must be a lowercase identifier declared on the class itself")
    if not isinstance(getattr(cls, "display_name", None), str) or not cls.display_name:
        problems.append("`display_name` must be a non-empty string")
    if getattr(cls, "edge", None) not in EDGES:
        problems.append(f"`edge` must be one of {EDGES}")
    if getattr(cls, "needs", None) not in NEEDS:
        problems.append(f"`needs` must be one of {NEEDS}")
    if inspect.isabstract(cls):
        problems.append(f"abstract methods left: {sorted(cls.__abstractmethods__)}")
    config = cls.__dict__.get("config")
    if config is None or not (isinstance(config, type) and issubclass(config, MethodConfig)):
        problems.append("it must declare its parameters in a `config` (a MethodConfig subclass) on the class itself")
    else:
        for f in dataclasses.fields(config):
            if f.default is dataclasses.MISSING:
                problems.append(f"parameter {f.name!r} needs a default (scikit-learn convention)")
            elif not f.metadata.get("help"):
                problems.append(f"parameter {f.name!r} needs one line of help: declare it with param()")
    if "budget_tokens" in cls.param_names() and not getattr(cls, "budget_rule", None):
        problems.append("it takes `budget_tokens`, so it must declare `budget_rule`")
    if problems:
        raise TypeError(f"cannot register {cls.__name__}: " + "; ".join(problems))
    if name in METHODS and METHODS[name] is not cls and METHODS[name].__qualname__ != cls.__qualname__:
        raise TypeError(f"cannot register {cls.__name__}: the name {name!r} is taken by {METHODS[name].__name__}")
    if name in cls.companions:
        raise TypeError(f"cannot register {cls.__name__}: it lists itself as a companion")
    unknown = set(cls.smoke_params) - set(cls.param_names())
    if unknown:
        raise TypeError(f"cannot register {cls.__name__}: smoke_params names unknown parameters {sorted(unknown)}")
    METHODS[name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The method registered as ``name`` (its module is imported first if it is not yet)."""
    if name not in METHODS:
        load_all()
    if name not in METHODS:
        raise EdgetuneError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def display_name(name: str) -> str:
    """A method's display name, read from its declaration (the name itself for labels of variants)."""
    from ..configs import declarations

    config = declarations().get(name)
    return config.display_name if config is not None else name


def is_method_module(module: str) -> bool:
    """Whether a module of ``edgetune.methods`` is a method's (not the framework's ``core`` or ``configs``)."""
    return module not in FRAMEWORK


def load_all() -> dict[str, type[Method]]:
    """Import every method module of ``edgetune.methods`` (so each registers itself) and return the registry."""
    import edgetune.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if is_method_module(info.name):
            importlib.import_module(f"{package.__name__}.{info.name}")
    return METHODS

