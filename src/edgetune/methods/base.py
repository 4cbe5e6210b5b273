"""The method interface, the name -> class registry, and what output-edge methods share.

scikit-learn conventions: parameters go to the constructor and are stored as given; ``fit`` returns
``self``; learned state ends with ``_``. A method is saved as ``config.json`` + ``weights.safetensors``
(no pickle) and refuses to load against a different model.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from safetensors.numpy import load_file, save_file

from ..backends import Backend, Features, load_backend
from ..backends.models import DEFAULT_MODEL
from ..data.example import Dataset, Example, as_examples
from ..data.tasks import parse_label_words
from ..data.templates import Template
from ..errors import DataError, EdgetuneError, IncompatibleError

METHODS: dict[str, type[Method]] = {}
FORMAT_VERSION = 1


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name`` (CLI, bench, :func:`load`)."""
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise EdgetuneError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


class Method(ABC):
    """``fit`` on labelled examples, ``predict`` label names, ``save``/``load`` a folder."""

    name: ClassVar[str]
    edge: ClassVar[str]  # "output" (needs only Features) or "input" (needs the torch model)

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the constructor parameters of this class and its bases (``model`` aside)."""
        names: dict[str, None] = {}
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for k, p in inspect.signature(init).parameters.items():
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and k not in ("self", "model"):
                    names[k] = None
        return list(names)

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as stored."""
        return {k: getattr(self, k) for k in self.param_names()}

    @abstractmethod
    def fit(self, X: Any, y: Sequence[str] | None = None) -> Method: ...

    @abstractmethod
    def predict(self, X: Any) -> list[str]: ...

    @abstractmethod
    def save(self, path: str | os.PathLike) -> Path: ...

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    raise TypeError(f"cannot save parameter value {value!r}")


def write_atomically(path: str | os.PathLike, config: dict[str, Any], tensors: dict[str, np.ndarray],
                     extra: Callable[[Path], None] | None = None) -> Path:
    """Write ``config.json`` and ``weights.safetensors`` (and whatever ``extra`` writes into the folder)
    into a temp folder, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not (target / "config.json").is_file() and any(target.iterdir()):
        raise EdgetuneError(f"{str(target)!r} exists and is not a saved edgetune model; choose another path")
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        (work / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
                  str(work / "weights.safetensors"))
        if extra is not None:
            extra(work)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def read_saved(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise EdgetuneError(f"{str(path)!r} is not a saved edgetune model (no config.json)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EdgetuneError(f"{cfg_path}: malformed JSON ({exc.msg})") from None
    weights = path / "weights.safetensors"
    tensors = load_file(str(weights)) if weights.is_file() else {}
    return config, tensors


def load(path: str | os.PathLike, model: str | Backend | None = None) -> Method:
    """Load any saved method; ``model`` (a name or backend) must be the model it was trained with."""
    config, _ = read_saved(path)
    return get_method(config.get("method", "?")).load(path, model=model)


def saved_backend_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Options that rebuild, by model name, the backend a saved method was trained with (so far: an
    embedding backend's score scale, which is part of its identity)."""
    settings = config.get("backend_settings") or {}
    return {"scale": settings["scale"]} if config.get("backend_kind") == "embedding" and "scale" in settings else {}


def restore(cls: type[Method], path: str | os.PathLike, model: str | Backend | None
            ) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """A ``cls`` built from a saved folder's parameters, with the prompt and model identity it was trained
    with; returns it with the saved config and arrays for the method-specific rest."""
    config, tensors = read_saved(path)
    if config.get("method") != cls.name:
        raise IncompatibleError(f"{str(path)!r} holds a {config.get('method')!r} model, not {cls.name!r}")
    obj = cls(model=model if model is not None else config["model"], **config.get("params", {}))
    obj.labels_ = tuple(config["labels"])
    obj.template_ = Template(config["template"])
    obj.words_ = list(config["label_words"])
    obj.identity_, obj.model_name_ = config["model_identity"], config["model"]
    return obj, config, tensors


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def calibrate(scores: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al., 2021): divide each label word's probability (normalised over
    the label words) by its probability for content-free inputs, renormalise; in log space.

    ``content_free`` is (m, C) scores of m content-free prompts; their normalised log-probs are averaged.
    (The DecT reference divides raw logits by the content-free logits over their mean; that is only
    meaningful when logits are positive, as for RoBERTa's MLM head, so edgetune uses the probability form.)
    """
    prior = log_softmax(content_free).mean(axis=0, keepdims=True)
    return log_softmax(log_softmax(scores) - prior)


def content_free_examples(template: Template) -> list[Example]:
    """Inputs with no content ("N/A" and the empty string) in every field the template names."""
    out = []
    for filler in ("N/A", ""):
        extra = {f: filler for f in template.fields if f not in ("text", "text_b", "mask")}
        out.append(Example(filler, filler, None, f"content-free:{filler}", extra))
    return out


def checked_backend(method: Method, backend: Backend) -> Backend:
    """``backend``, after checking it is the model ``method`` was trained on (if it was)."""
    expected = getattr(method, "identity_", None)
    if expected is not None and backend.identity != expected:
        raise IncompatibleError(
            f"this {method.name} was trained on model {getattr(method, 'model_name_', '?')!r} ({expected}); "
            f"it does not fit {backend.name!r} ({backend.identity}). Retrain it or pass the original model")
    return backend


def resolve_prompt(X: Any, template: str | None, label_words: Mapping[str, str] | str | None
                   ) -> tuple[Template, dict[str, str], tuple[str, ...]]:
    """The template, label words and label order for training data ``X``: the method's own settings, else
    those of the task ``X`` was drawn from."""
    task = getattr(X, "task", None)
    template = template if template is not None else getattr(task, "template", None)
    words = label_words if label_words is not None else getattr(task, "label_words", None)
    if template is None or words is None:
        raise DataError("no prompt: pass template= and label_words= (or fit on a task's sample)")
    words = parse_label_words(words)
    labels = tuple(X.labels) if isinstance(X, Dataset) else tuple(words)
    missing = [lab for lab in labels if lab not in words]
    if missing:
        raise DataError(f"no label word for label(s) {missing}")
    return Template(template), words, labels


class OutputEdgeMethod(Method):
    """A method that needs only :class:`Features`: one backend query per prompt, never the weights.

    Subclasses implement :meth:`fit_features` and :meth:`decision_features` and list learned arrays in
    :meth:`state`/:meth:`set_state`; this class turns examples into features (cached) and handles
    saving, loading and the model-identity check.
    """

    edge = "output"

    def __init__(self, model: str | Backend = DEFAULT_MODEL, *, template: str | None = None,
                 label_words: Mapping[str, str] | str | None = None) -> None:
        self.model = model
        self.template = template
        self.label_words = label_words
        self._backend: Backend | None = None if isinstance(model, str) else model
        self._backend_options: dict[str, Any] = {}  # how to rebuild the backend by name (set by load)

    # -- to implement -----------------------------------------------------------------------------------
    @abstractmethod
    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> OutputEdgeMethod:
        """Learn from training features and label indices."""

    @abstractmethod
    def decision_features(self, features: Features) -> np.ndarray:
        """(n, C) class scores; the prediction is their argmax."""

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        pass

    # -- backend ----------------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = load_backend(str(self.model), **self._backend_options)
        return checked_backend(self, self._backend)

    def _prompting(self, X: Any) -> tuple[Template, dict[str, str], tuple[str, ...]]:
        return resolve_prompt(X, self.template, self.label_words)

    def features(self, X: Any, description: str = "prompts") -> Features:
        """Features of inputs under the fitted prompt (cached by the backend)."""
        self._check_fitted()
        examples = as_examples(X)
        return self.backend.features(examples, self.template_, self.words_, description)

    # -- scikit-learn surface ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str] | None = None) -> OutputEdgeMethod:
        """Fit on a task sample (``Dataset``) or on texts ``X`` with label names ``y``."""
        template, words, labels = self._prompting(X)
        examples = as_examples(X, y)
        y_names = [e.label for e in examples]
        if any(lab is None for lab in y_names):
            raise DataError("every training example needs a label (pass y=)")
        unknown = sorted({lab for lab in y_names if lab not in labels})
        if unknown:
            raise DataError(f"unknown label(s) {unknown}; the labels are {list(labels)}")
        self.labels_ = labels
        self.template_ = template
        self.words_ = [words[lab] for lab in labels]
        train = self.backend.features(examples, template, self.words_, "training prompts")
        cf = self.backend.features(content_free_examples(template), template, self.words_, "content-free prompts")
        index = {lab: i for i, lab in enumerate(labels)}
        return self.fit_prepared(train, np.array([index[lab] for lab in y_names]), cf)

    def fit_prepared(self, train: Features, y: np.ndarray, content_free: Features,
                     labels: Sequence[str] | None = None, template: Template | str | None = None,
                     words: Sequence[str] | None = None) -> OutputEdgeMethod:
        """Fit on features already extracted (the bench shares one extraction among methods)."""
        if labels is not None:
            self.labels_ = tuple(labels)
        if template is not None:
            self.template_ = Template(template) if isinstance(template, str) else template
        if words is not None:
            self.words_ = list(words)
        if len(train) == 0:
            raise DataError("no training examples")
        self.identity_ = self.backend.identity
        self.model_name_ = self.backend.name
        self.hidden_dim_ = int(train.hidden.shape[1])
        self.fit_features(train, np.asarray(y), content_free)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return self.decision_features(self.features(X))

    def predict(self, X: Any) -> list[str]:
        if isinstance(X, str):
            X = [X]
        return self.labels_from_scores(self.decision_function(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.exp(log_softmax(self.decision_function(X)))

    def labels_from_scores(self, scores: np.ndarray) -> list[str]:
        return [self.labels_[i] for i in scores.argmax(axis=1)]

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise EdgetuneError(f"this {self.name} is not fitted yet: call fit() first")

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        config = {
            "format": FORMAT_VERSION, "method": self.name, "edge": self.edge,
            "params": _jsonable(self.get_params()),
            "labels": list(self.labels_), "template": self.template_.text, "label_words": list(self.words_),
            "model": self.model_name_, "model_identity": self.identity_, "backend_kind": self.backend.kind,
            "backend_settings": _jsonable(getattr(self.backend, "settings", dict)()), "hidden_dim": self.hidden_dim_,
        }
        return write_atomically(path, config, self.state())

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> OutputEdgeMethod:
        obj, config, tensors = restore(cls, path, model)
        obj.hidden_dim_ = int(config["hidden_dim"])
        obj._backend_options = saved_backend_options(config)  # a backend rebuilt by name is built as trained
        obj.set_state(tensors)
        if model is not None:
            obj.backend  # noqa: B018 - checks the identity now, not at the first prediction
        return obj
