"""edgetune: adapt a frozen language model at its edges.

>>> from edgetune import DecT, load_task
>>> task = load_task("sst2")
>>> clf = DecT(model="smollm2-135m").fit(task.sample(shots=16, seed=0))
>>> clf.predict(["a gorgeous, witty film"])
"""

from . import methods as _methods
from .backends import EmbeddingBackend, FeatureCache, Features, LocalBackend, OpenAIBackend, load_backend
from .data import Dataset, Example, Task, Template, load_task, read_examples
from .errors import EdgetuneError
from .methods import METHODS, Method, get_method, load

__version__ = "0.1.0"

# every registered method, under its class name (the registry is the only list)
globals().update({_cls.__name__: _cls for _cls in METHODS.values()})

__all__ = [
    "METHODS", "Dataset", "EdgetuneError", "EmbeddingBackend", "Example", "FeatureCache", "Features",
    "LocalBackend", "Method", "OpenAIBackend", "Task", "Template", "__version__", "get_method", "load",
    "load_backend", "load_task", "read_examples",
    *sorted(_cls.__name__ for _cls in _methods.METHODS.values()),
]
