"""edgetune: adapt a frozen language model at its edges.

>>> from edgetune import DecT, load_task
>>> task = load_task("sst2")
>>> clf = DecT(model="smollm2-135m").fit(task.sample(shots=16, seed=0))
>>> clf.predict(["a gorgeous, witty film"])

Names are imported on first use (PEP 562), so ``import edgetune`` and the command line start without
loading torch; every registered method is exported under its class name (the registry is the only list).
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import EdgetuneError as EdgetuneError
from .methods.configs import declared as _declared

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "Dataset": ".data", "Example": ".data", "Task": ".data", "Template": ".data", "load_task": ".data",
    "read_examples": ".data",
    "Backend": ".backends", "EmbeddingBackend": ".backends", "FeatureCache": ".backends", "Features": ".backends",
    "LocalBackend": ".backends", "OpenAIBackend": ".backends", "load_backend": ".backends",
    "METHODS": ".methods", "Method": ".methods", "get_method": ".methods", "load": ".methods",
    "MethodConfig": ".methods",
}
#: every declared method's class name -> its registry name (read from the declarations: no torch)
_METHOD_CLASSES = {config.estimator: name for name, config in _declared().items()}

__all__ = sorted(["EdgetuneError", "__version__", *_EXPORTS, *_METHOD_CLASSES])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _METHOD_CLASSES:
        from .methods import get_method

        value = get_method(_METHOD_CLASSES[name])
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
