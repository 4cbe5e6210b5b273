"""edgetune: adapt a frozen language model at its edges.

>>> from edgetune import DecT, load_task
>>> task = load_task("sst2")
>>> clf = DecT(model="smollm2-135m").fit(task.sample(shots=16, seed=0))
>>> clf.predict(["a gorgeous, witty film"])
"""

from .backends import EmbeddingBackend, FeatureCache, Features, LocalBackend, load_backend
from .data import Dataset, Example, Task, Template, load_task, read_examples
from .errors import EdgetuneError
from .methods import METHODS, CalibratedZeroShot, DecT, LinearProbe, ZeroShot, load

__version__ = "0.1.0"

__all__ = [
    "METHODS", "CalibratedZeroShot", "Dataset", "DecT", "EdgetuneError", "EmbeddingBackend", "Example",
    "FeatureCache", "Features", "LinearProbe", "LocalBackend", "Task", "Template", "ZeroShot", "__version__",
    "load", "load_backend", "load_task", "read_examples",
]
