"""The method contract, the name -> class registry, and the estimator surface every method shares.

**The registry is the only list of methods.** A method is one module in this package with one class
decorated by :func:`register`; the package imports every module, so none can be left out. The class
declares what the rest of edgetune needs to know about it, and the CLI, the bench, the report and the
tests read those declarations instead of keeping lists of their own:

=================  =======================================================================================
``name``           registry key, CLI name, label in results (``"dect"``)
``display_name``   name in reports and tables (``"DecT"``)
``edge``           ``"output"`` (needs only :class:`Features`), ``"input"`` (changes what the frozen model
                   reads) or ``"body"`` (fine-tunes a copy of the encoder, e.g. SetFit)
``needs``          what the backend must provide: ``"features"`` (any backend, remote ones too),
                   ``"weights"`` (an in-process model: :attr:`Backend.provides_weights`) or ``"encoder"`` (a
                   sentence-transformers model)
``default_model``  the model used when none is given
``budget_rule``    how its trainable-parameter count follows ``budget_tokens`` (``None``: no budget knob)
``companions``     methods ``edgetune run NAME`` runs beside it on the same features (DecT's baselines)
``smoke_params``   the smallest settings that exercise it end to end (the contract test, quick tries)
=================  =======================================================================================

and, after ``fit``, reports its costs through :meth:`Method.costs` (trainable parameters, model queries
its training needed, optimizer steps or black-box calls).

scikit-learn conventions: parameters go to the constructor and are stored as given; they are validated
in ``fit``; ``fit`` returns ``self``; learned state ends with ``_`` (``labels_`` always). A method is saved
as ``config.json`` + ``weights.safetensors`` (never pickle) and refuses to load against another model.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from ..backends import Backend, load_backend
from ..backends import saved_backend_options as backend_options
from ..backends.base import NeedsWeightsError
from ..backends.models import DEFAULT_MODEL
from ..data.example import Dataset, Example, as_examples
from ..data.tasks import parse_label_words, readable_label
from ..data.templates import Template
from ..errors import DataError, EdgetuneError, IncompatibleError

METHODS: dict[str, type[Method]] = {}
FORMAT_VERSION = 1
EDGES = ("output", "input", "body")
NEEDS = ("features", "weights", "encoder")
#: constructor parameters that steer a run, not the method (never shown as knobs, never saved)
RUNTIME_PARAMS = ("progress",)


class NotFittedError(EdgetuneError, SklearnNotFittedError):
    """The method is used before ``fit`` (or ``load``); scikit-learn's ``NotFittedError`` too."""


class ParamError(EdgetuneError):
    """A method parameter has a value no run can use."""


def check_positive_int(method: Any, *names: str) -> None:
    """Raise :class:`ParamError` naming the first of ``names`` that is not a positive integer."""
    for name in names:
        value = getattr(method, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParamError(f"{method.name}: {name} must be a positive integer, not {value!r}")


def check_positive_number(method: Any, *names: str) -> None:
    """Raise :class:`ParamError` naming the first of ``names`` that is not a finite positive number."""
    for name in names:
        value = getattr(method, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
            raise ParamError(f"{method.name}: {name} must be a positive number, not {value!r}")


#: the largest learning rate (or learning-rate ratio) a method accepts: Adam/AdamW move every parameter by about
#: the rate per step, and no parameter these methods train is anywhere near that scale, so a larger rate is a typo
#: (``--lr 1e308``), refused before anything runs; a finite rate below it that still diverges is caught in training
MAX_LR = 1e3
#: the largest ``seed`` (numpy's and scikit-learn's seeds are 32-bit)
MAX_SEED = 2**32 - 1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def check_number(method: Any, name: str, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, none_ok: bool = False) -> None:
    """Raise :class:`ParamError` unless parameter ``name`` is a finite number in the range [low, high] (an end is
    excluded when ``low_open``/``high_open``; ``None`` is no bound); ``none_ok``: ``None`` is accepted too."""
    value = getattr(method, name)
    if value is None and none_ok:
        return
    ok = _is_number(value) and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if low is not None or high is not None else ""
        raise ParamError(f"{method.name}: {name} must be a finite number{where}"
                         f"{' or None' if none_ok else ''}, not {value!r}")


def check_whole(method: Any, name: str, low: int = 0, high: int | None = None, *, none_ok: bool = False) -> None:
    """Raise :class:`ParamError` unless parameter ``name`` is a whole number from ``low`` to ``high`` (``None``
    accepted when ``none_ok``)."""
    value = getattr(method, name)
    if value is None and none_ok:
        return
    if (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low
            or (high is not None and value > high)):
        span = f"from {low} to {high}" if high is not None else f"≥ {low}"
        raise ParamError(f"{method.name}: {name} must be a whole number {span}{' or None' if none_ok else ''}, "
                         f"not {value!r}")


def check_learning_rate(method: Any, *names: str) -> None:
    """Raise :class:`ParamError` unless each of ``names`` is a finite rate in (0, :data:`MAX_LR`]."""
    for name in names:
        check_number(method, name, 0, MAX_LR, low_open=True)


def check_seed(method: Any, name: str = "seed") -> None:
    check_whole(method, name, 0, MAX_SEED)


def check_names(method: Any, name: str) -> None:
    """Parameter ``name`` is ``None`` or a non-empty list of names (e.g. ``target_modules``)."""
    value = getattr(method, name)
    if value is not None and (isinstance(value, str) or not isinstance(value, list | tuple) or not value
                              or not all(isinstance(v, str) and v for v in value)):
        raise ParamError(f"{method.name}: {name} must be a non-empty list of names or None, not {value!r}")


def check_lam(method: Any, none_ok: bool = True) -> None:
    """A prototype decoder's ``lam`` (a finite λ ≥ 0 — 0 switches the prompt's scores off —, ``None`` for 1/shots
    where ``none_ok``, or ``"cv"``) and ``lam_grid`` (finite λ values ≥ 0 that ``"cv"`` chooses among)."""
    lam = method.lam
    if not ((isinstance(lam, str) and lam == "cv") or (lam is None and none_ok)
            or (_is_number(lam) and np.isfinite(lam) and lam >= 0)):
        raise ParamError(f"{method.name}: lam must be a finite number ≥ 0{', None (1/shots)' if none_ok else ''} or "
                         f"'cv', not {lam!r}")
    if not isinstance(method.lam_grid, list | tuple) or not all(
            _is_number(g) and np.isfinite(g) and g >= 0 for g in method.lam_grid):
        raise ParamError(f"{method.name}: lam_grid must hold finite numbers ≥ 0, not {method.lam_grid!r}")


def check_prompt_settings(method: Any) -> None:
    """``template`` (a string or None) and ``label_words`` (a mapping, a ``"label:word,..."`` string or None)."""
    template, words = getattr(method, "template", None), getattr(method, "label_words", None)
    if template is not None and not isinstance(template, str):
        raise ParamError(f"{method.name}: template must be a string (e.g. '{{text}} It was {{mask}}'), "
                         f"not {template!r}")
    if words is not None and not isinstance(words, str | Mapping):
        raise ParamError(f"{method.name}: label_words must be a mapping label -> word or 'label:word,...', "
                         f"not {words!r}")


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
    for pname, p in cls.init_parameters().items():
        if p.default is inspect.Parameter.empty:
            problems.append(f"constructor parameter {pname!r} needs a default (scikit-learn convention)")
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
    if name not in METHODS:
        raise EdgetuneError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def display_name(name: str) -> str:
    """A registered method's display name (the name itself for labels of variants)."""
    return METHODS[name].display_name if name in METHODS else name


@dataclass(frozen=True)
class Costs:
    """What a fitted method cost: trainable parameters, model queries its training needed (forward passes
    over single samples, cached or not: train + dev), and optimizer steps or black-box calls."""

    trainable_params: int
    queries: int
    steps: int = 0


class Method(ClassifierMixin, BaseEstimator, ABC):
    """``fit`` on labelled examples, ``predict`` labels, ``save``/``load`` a folder: a scikit-learn classifier.

    Subclasses implement :meth:`fit`, :meth:`class_scores`, :meth:`costs`, :meth:`save` and
    :meth:`load`; this class gives every method the same backend handling, label checks, ``predict``,
    ``predict_proba``, ``score`` and scikit-learn's parameter protocol (``get_params``/``set_params``, and
    ``sklearn.base.clone``, which shares a model already loaded instead of copying its weights).

    Attributes
    ----------
    labels_ : tuple of str
        Label names, in the order of the columns of ``class_scores`` / ``predict_proba``.
    classes_ : numpy array
        The labels as they were given to ``fit`` (strings, ints, …), in the same order; ``predict`` returns these.
    identity_, model_name_ : str
        The model it was fitted on (a load against another model is refused).
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    edge: ClassVar[str]
    needs: ClassVar[str]
    default_model: ClassVar[str] = DEFAULT_MODEL
    budget_rule: ClassVar[str | None] = None
    companions: ClassVar[tuple[str, ...]] = ()
    smoke_params: ClassVar[dict[str, Any]] = {}
    #: the learned attribute whose presence means "fitted" (or loaded)
    fitted_attribute: ClassVar[str] = "labels_"

    def __init__(self, model: str | Backend | None = None) -> None:
        self.model = model  # stored as given (scikit-learn); None means the method's default_model
        self._backend: Backend | None = None if model is None or isinstance(model, str) else model
        self._backend_options: dict[str, Any] = {}  # how to rebuild the backend by name (set by load)

    # -- introspection ----------------------------------------------------------------------------------
    @classmethod
    def init_parameters(cls) -> dict[str, inspect.Parameter]:
        """Constructor parameters of this class and its bases (``self``, ``model`` and ``**kwargs`` aside)."""
        out: dict[str, inspect.Parameter] = {}
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for k, p in inspect.signature(init).parameters.items():
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and k not in ("self", "model") and k not in out:
                    out[k] = p
        return out

    @classmethod
    def param_names(cls) -> list[str]:
        return list(cls.init_parameters())

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each constructor parameter's default, as the signature states it (the CLI's help reads this)."""
        return {k: p.default for k, p in cls.init_parameters().items()}

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(["model", *cls.param_names()])

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters as stored, ``model`` included (scikit-learn's protocol; an edgetune method
        holds no nested estimator, so ``deep`` changes nothing)."""
        return {"model": self.model, **{k: getattr(self, k) for k in self.param_names()}}

    def set_params(self, **params: Any) -> Method:
        """Set constructor parameters (scikit-learn's protocol); a new ``model`` drops the loaded backend."""
        valid = ["model", *self.param_names()]
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}. Valid parameters "
                                 f"are: {sorted(valid)!r}.")
            if key == "model":
                self.model = value
                self._backend = None if value is None or isinstance(value, str) else value
                self._backend_options = {}
            else:
                setattr(self, key, value)
        return self

    def __sklearn_clone__(self) -> Method:
        """An unfitted copy with equal parameters (``sklearn.base.clone``). The model is shared, never copied: a
        backend object is passed on as is, and a model already loaded by name is handed to the copy, so a grid
        search or a cross-validation loads it once (and reads the same feature cache)."""
        params = {k: copy.deepcopy(v) for k, v in self.get_params().items() if k != "model"}
        new = type(self)(model=self.model, **params)
        if self._backend is not None and (self.model is None or isinstance(self.model, str)):
            new._backend, new._backend_options = self._backend, dict(self._backend_options)
        return new

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # texts in, one per sample
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        tags.non_deterministic = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, self.fitted_attribute)

    @property
    def classes_(self) -> np.ndarray:
        """The labels as given to ``fit`` (their own type), in the order of ``labels_``."""
        if not hasattr(self, "labels_"):
            raise AttributeError(f"this {self.name} is not fitted yet: it has no classes_")
        values = getattr(self, "label_values_", None)
        return np.asarray(list(values) if values is not None else list(self.labels_))

    def saved_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.get_params().items() if k not in RUNTIME_PARAMS and k != "model"}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "model")
        return f"{type(self).__name__}({params})"

    # -- backend ------------------------------------------------------------------------------------------
    def _load_backend(self) -> Backend:
        """Build the backend from the model name (subclasses choose cache and kind)."""
        return load_backend(self.model_name, **self._backend_options)

    @property
    def model_name(self) -> str:
        """The model this method runs on, by name: ``model`` as given, or ``default_model`` for ``None``."""
        if self.model is None:
            return self.default_model
        return self.model if isinstance(self.model, str) else self.model.name

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._check_model_name()
            self._backend = self._load_backend()
        backend = self._backend
        if self.needs == "weights" and not backend.provides_weights:
            raise NeedsWeightsError(f"{self.name} trains through the model's weights; backend {backend.name!r} "
                                    f"({backend.kind}) only answers queries: use an in-process model "
                                    "(--backend local)")
        if self.needs == "encoder" and backend.kind != "embedding":
            raise IncompatibleError(f"{self.name} fine-tunes a sentence-transformers encoder; {backend.name!r} is "
                                    f"a {backend.kind} model (try model={self.default_model!r})")
        expected = getattr(self, "identity_", None)
        if expected is not None and backend.identity != expected:
            raise IncompatibleError(
                f"this {self.name} was trained on model {getattr(self, 'model_name_', '?')!r} "
                f"({short_identity(expected)}); it does not fit {backend.name!r} ({short_identity(backend.identity)}). "
                "Retrain it or pass the original model")
        return backend

    def _check_model_name(self) -> None:
        """For a loaded method about to build its backend by name: refuse a name that does not give the model it was
        trained on, decided from the name alone (a packaged model's version, a local folder's files, a hub id) —
        before any weights are loaded or the model hub is asked. Remote backends are checked once reached."""
        from ..backends.models import local_identity

        expected = getattr(self, "identity_", None)
        if expected is None or self._backend is not None or self._backend_options.get("kind") not in (
                None, "causal", "masked", "seq2seq", "embedding"):
            return
        local = local_identity(self.model_name)
        if local is None or expected == local or expected.startswith(local + "|"):  # "|": an embedding model's scale
            return
        raise IncompatibleError(
            f"this {self.name} was trained on model {getattr(self, 'model_name_', '?')!r} "
            f"({short_identity(expected)}); it does not fit {self.model_name!r} ({short_identity(local)}). Retrain it "
            "or pass the original model")

    # -- fitting helpers ------------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        """Raise :class:`ParamError` for a parameter value no run can use (called first in ``fit``)."""

    @classmethod
    def validate_params(cls, params: Mapping[str, Any] | None = None) -> None:
        """Raise a one-line :class:`ParamError` for ``params`` (name -> value) this method cannot run with: an
        unknown name, or a value its own checks refuse (the ones ``fit`` makes first). Builds no backend, loads no
        model and fits nothing, so the command line and a bench config can check a run before it starts."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(cls.param_names()))
        if unknown:
            raise ParamError(f"{cls.name} has no parameter(s) {unknown}; it takes {', '.join(cls.param_names())}")
        try:
            method = cls(model="unloaded", **params)  # a name is stored, nothing is loaded
        except (TypeError, ValueError) as exc:
            raise ParamError(f"{cls.name}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
        method._validate_params()

    def _prompting(self, X: Any, y: Sequence[str] | None = None) -> tuple[Template, dict[str, str], tuple[str, ...]]:
        return resolve_prompt(X, getattr(self, "template", None), getattr(self, "label_words", None), y)

    def _labelled(self, X: Any, y: Any, labels: Sequence[str]) -> tuple[list[Example], np.ndarray]:
        """Training examples and their label indices in ``labels``; every example needs a known label. With
        ``y`` (the training labels), the labels' own values are kept for ``classes_`` and ``predict``."""
        examples = as_examples(X, y)
        if y is not None:
            given = label_values(y)
            values = tuple(given.get(lab, lab) for lab in labels)
            self.label_values_ = None if all(isinstance(v, str) for v in values) else values
        if not examples:
            raise DataError("no training examples")
        names = [e.label for e in examples]
        if any(lab is None for lab in names):
            raise DataError("every training example needs a label (pass y=)")
        unknown = sorted({lab for lab in names if lab not in labels})
        if unknown:
            raise DataError(f"unknown label(s) {unknown}; the labels are {list(labels)}")
        index = {lab: i for i, lab in enumerate(labels)}
        return examples, np.array([index[lab] for lab in names], dtype=np.int64)

    def _check_fitted(self) -> None:
        if not hasattr(self, self.fitted_attribute):
            raise NotFittedError(f"this {self.name} is not fitted yet: call fit() first")

    # -- the estimator surface ------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, X: Any, y: Sequence[str] | None = None) -> Method:
        """Fit on a task sample (a :class:`Dataset`) or on texts ``X`` with label names ``y``."""

    @abstractmethod
    def class_scores(self, X: Any) -> np.ndarray:
        """(n, C) class scores in the order of ``labels_``; the prediction is their argmax."""

    def decision_function(self, X: Any) -> np.ndarray:
        """scikit-learn's decision function: for two classes, (n,) scores of ``classes_[1]`` against
        ``classes_[0]`` (the difference of their :meth:`class_scores`, a log-odds); else the (n, C) class scores."""
        scores = np.asarray(self.class_scores(X))
        return scores[:, 1] - scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 2 else scores

    def predict(self, X: Any) -> list[Any]:
        """The label of each input, as the labels were given to ``fit`` (names, or ints, …). No inputs: an
        empty list, where scikit-learn raises (a labelling tool given an empty batch has nothing to label)."""
        scores = np.asarray(self.class_scores([X] if isinstance(X, str) else X))
        return [] if len(scores) == 0 else self.classes_[scores.argmax(axis=1)].tolist()

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.exp(log_softmax(self.class_scores([X] if isinstance(X, str) else X)))

    def labels_from_scores(self, scores: np.ndarray) -> list[str]:
        scores = np.asarray(scores)
        return [] if len(scores) == 0 else [self.labels_[i] for i in scores.argmax(axis=1)]

    @abstractmethod
    def costs(self) -> Costs:
        """Trainable parameters, training queries and steps of the fitted method."""

    # -- persistence ------------------------------------------------------------------------------------------
    @abstractmethod
    def save(self, path: str | os.PathLike) -> Path: ...

    @classmethod
    @abstractmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> Method: ...

    def _base_config(self) -> dict[str, Any]:
        """What every saved method records: format, method, parameters, labels and the model identity."""
        config = {"format": FORMAT_VERSION, "method": self.name, "edge": self.edge,
                  "params": _jsonable(self.saved_params()), "labels": list(self.labels_),
                  "model": self.model_name_, "model_identity": self.identity_}
        values = getattr(self, "label_values_", None)
        if values is not None and all(isinstance(v, int | float | bool) for v in values):
            config["label_values"] = list(values)  # labels given as numbers: predict returns numbers after a load
        return config


def _plain_value(value: Any) -> Any:
    """A label value as a plain Python object (a numpy scalar becomes its Python counterpart)."""
    return value.item() if isinstance(value, np.generic) else value


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
    for name, value in tensors.items():  # a decoder that trained to NaN is never written (nor loaded, see read_saved)
        array = np.asarray(value)
        if array.dtype.kind == "f" and np.isnan(array).any():
            raise EdgetuneError(f"not saving {config.get('method', 'this model')!r} to {str(target)!r}: its "
                                f"{name!r} holds NaN (training diverged); retrain it, e.g. with a lower learning rate")
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        config = {**config, "tensors": sorted(tensors)}  # what loading must find in weights.safetensors
        (work / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        save_file({k: np.ascontiguousarray(v, dtype=np.int64 if np.asarray(v).dtype.kind in "iu" else np.float32)
                   for k, v in tensors.items()},
                  str(work / "weights.safetensors"))
        if extra is not None:
            extra(work)
        # the temp folder is private (0700) while written; the saved model gets the user's usual permissions
        # (so a service or another account can load it where the umask allows, as with any file they write)
        mask = os.umask(0)
        os.umask(mask)
        for item in [work, *work.rglob("*")]:
            item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)
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
    """A saved folder's ``config.json`` and arrays, checked for what every method needs before any of it is used:
    a format this version reads (:data:`FORMAT_VERSION` or older), the entries of :meth:`Method._base_config`
    with their types, the listed arrays present and free of NaN. Every failure is one :class:`IncompatibleError`
    line naming the folder."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise EdgetuneError(f"{str(path)!r} is not a saved edgetune model (no config.json)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EdgetuneError(f"{cfg_path}: malformed JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise EdgetuneError(f"{cfg_path}: not UTF-8 text") from None
    check_saved_config(path, config)
    weights = path / "weights.safetensors"
    try:
        tensors = load_file(str(weights)) if weights.is_file() else {}
    except Exception as exc:  # safetensors' own error type: a truncated or overwritten file
        raise IncompatibleError(f"{weights}: damaged weights file ({str(exc).splitlines()[0]}); save or train the "
                                "model again") from None
    missing = sorted(set(config.get("tensors", [])) - set(tensors))
    if missing:
        where = "has no weights file" if not weights.is_file() else f"lacks trained weights {missing[:3]}"
        raise IncompatibleError(f"{str(path)!r} {where}: save or train the model again")
    for name, array in tensors.items():
        if array.dtype.kind == "f" and np.isnan(array).any():
            raise IncompatibleError(f"{str(path)!r}: saved weights {name!r} hold NaN (a diverged training); train "
                                    "the model again")
    return config, tensors


def check_saved_config(path: str | os.PathLike, config: Any) -> None:
    """Refuse, in one line naming the folder, a ``config.json`` this version cannot read: a newer (or missing)
    ``format``, or an entry every method relies on that is missing or of the wrong type."""
    where = repr(str(path))
    if not isinstance(config, dict):
        raise IncompatibleError(f"{where}: config.json holds a {type(config).__name__}, not a saved model's settings")
    version = config.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise IncompatibleError(f"{where}: config.json has no valid format version ({version!r}); it was not "
                                "written by edgetune's save")
    if version > FORMAT_VERSION:
        raise IncompatibleError(f"{where} was saved in format {version}, newer than this edgetune reads "
                                f"({FORMAT_VERSION}); upgrade edgetune to load it")

    def bad(entry: str, what: str) -> IncompatibleError:
        return IncompatibleError(f"{where}: config.json's {entry!r} must be {what}, not "
                                 f"{short_value(config.get(entry))}; save or train the model again")

    for entry in ("method", "model", "model_identity"):
        if not isinstance(config.get(entry), str) or not config[entry]:
            raise bad(entry, "a non-empty string")
    labels = config.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(lab, str) for lab in labels):
        raise bad("labels", "a non-empty list of label names")
    if len(set(labels)) != len(labels):
        raise bad("labels", "a list of distinct label names")
    if not isinstance(config.get("params", {}), dict):
        raise bad("params", "a mapping of parameter names to values")
    tensors = config.get("tensors", [])
    if not isinstance(tensors, list) or not all(isinstance(t, str) for t in tensors):
        raise bad("tensors", "a list of array names")
    if "template" in config and not isinstance(config["template"], str):
        raise bad("template", "a string")
    words = config.get("label_words", [])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise bad("label_words", "a list of label words")


def short_value(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_shapes(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                 expected: Mapping[str, tuple[int | None, ...]], why: str = "") -> None:
    """Refuse, in one :class:`IncompatibleError` line naming the folder, saved arrays missing from ``tensors`` or
    whose shape is not ``expected`` (name -> shape; ``None`` matches any size on that axis): what the config says
    (labels, hidden size, parameters) and what the weights hold must agree before anything is built from them."""
    for name, shape in expected.items():
        if name not in tensors:
            raise IncompatibleError(f"{str(path)!r} lacks the saved array {name!r} its config calls for; it is not "
                                    "a complete model of this method: save or train it again")
        got = tuple(np.shape(tensors[name]))
        if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape, strict=True)):
            want = "(" + ", ".join("any" if w is None else str(w) for w in shape) + (",)" if len(shape) == 1 else ")")
            raise IncompatibleError(f"{str(path)!r}: saved array {name!r} has shape {got}, but its config says "
                                    f"{want}{f' ({why})' if why else ''}; the config and the weights do not belong "
                                    "together: save or train the model again")


def short_identity(identity: str) -> str:
    """A model identity for a message: as is when short, else its start and a digest of the rest (a local
    folder's identity holds its whole config.json), on one line."""
    identity = " ".join(identity.split())
    if len(identity) <= 80:
        return identity
    import hashlib

    return f"{identity[:60]}… #{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def load(path: str | os.PathLike, model: str | Backend | None = None) -> Method:
    """Load any saved method; ``model`` (a name or backend) must be the model it was trained with."""
    config, _ = read_saved(path)
    if config["method"] not in METHODS:
        raise IncompatibleError(f"{str(path)!r} holds a model of method {config['method']!r}, which this edgetune "
                                f"does not have (known: {', '.join(sorted(METHODS))})")
    return get_method(config["method"]).load(path, model=model)


def saved_backend_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """How to rebuild, by model name, the backend a saved method was trained with (see
    :func:`edgetune.backends.saved_backend_options`)."""
    return backend_options(config.get("backend_kind"), config.get("backend_settings"))


def restore(cls: type[Method], path: str | os.PathLike, model: str | Backend | None
            ) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """A ``cls`` built from a saved folder's parameters, with the labels, prompt and model identity it was
    trained with; returns it with the saved config and arrays for the method-specific rest.

    Checked first, without loading any model: the format and entries (:func:`read_saved`), that the folder holds
    this method, that its parameters are this method's and pass its checks, and that there is one label word per
    label (per word set). Each method's ``load`` then checks its arrays' shapes before building anything; a model
    given by name is compared with the one it was trained on before it is loaded (:attr:`Method.backend`)."""
    config, tensors = read_saved(path)
    restored_config(cls, path, config)
    obj = cls(model=model if model is not None else config["model"], **config.get("params", {}))
    obj.labels_ = tuple(config["labels"])
    values = config.get("label_values")
    if values is not None:
        if not (isinstance(values, list) and len(values) == len(obj.labels_)
                and [str(v) for v in values] == list(obj.labels_)):
            raise IncompatibleError(f"{str(path)!r}: config.json's 'label_values' do not match its labels; the config "
                                    "was edited: save or train the model again")
        obj.label_values_ = tuple(values)
    if "template" in config:
        obj.template_ = Template(config["template"])
        obj.words_ = list(config["label_words"])
        per_label = getattr(obj, "words_per_label", 1)
        if len(obj.words_) != per_label * len(obj.labels_):
            raise IncompatibleError(f"{str(path)!r}: {len(obj.words_)} label word(s) for {len(obj.labels_)} "
                                    f"label(s) {list(obj.labels_)[:5]}" + (f" × {per_label} word sets" if per_label > 1
                                                                           else "") +
                                    "; the config was edited: save or train the model again")
    obj.identity_, obj.model_name_ = config["model_identity"], config["model"]
    obj._backend_options = saved_backend_options(config)  # a backend rebuilt by name is built as trained
    return obj, config, tensors


def restored_config(cls: type[Method], path: str | os.PathLike, config: Mapping[str, Any]) -> None:
    """Refuse a saved config that is not ``cls``'s: another method's, or parameters ``cls`` does not take or
    refuses (:meth:`Method.validate_params`), in one :class:`IncompatibleError` line naming the folder."""
    if config.get("method") != cls.name:
        raise IncompatibleError(f"{str(path)!r} holds a {config.get('method')!r} model, not {cls.name!r}")
    try:
        cls.validate_params(config.get("params", {}))
    except ParamError as exc:
        raise IncompatibleError(f"{str(path)!r}: its saved parameters do not fit {cls.name}: {exc}") from None


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


def batch_prior(scores: np.ndarray) -> np.ndarray:
    """Batch calibration's prior (Zhou et al., 2023): (1, C) log of the mean label-word probability
    (normalised over the label words) over the rows of ``scores``, a batch of unlabelled inputs."""
    return np.log(np.exp(log_softmax(scores.astype(np.float64))).mean(axis=0, keepdims=True))


def batch_calibrate(scores: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Normalised label-word log-probabilities divided by a :func:`batch_prior` (log space), renormalised —
    the same form as :func:`calibrate`, with the prior estimated from real inputs."""
    return log_softmax(log_softmax(scores.astype(np.float64)) - prior).astype(np.float32)


def logistic_head(clf: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted scikit-learn ``LogisticRegression`` as (C, d) coefficients and (C,) intercepts over all
    ``n_classes`` (a class absent from training gets a -1e9 intercept), so prediction is a matrix product
    and nothing pickled is ever stored."""
    coef = np.zeros((n_classes, clf.coef_.shape[1]), np.float32)
    bias = np.full(n_classes, -1e9, np.float32)
    if len(clf.classes_) == 2:  # sklearn keeps one row for two classes: score(c1) - score(c0) = w.x + b
        coef[clf.classes_[1]] = clf.coef_[0]
        bias[clf.classes_[1]] = clf.intercept_[0]
        bias[clf.classes_[0]] = 0.0
    else:
        coef[clf.classes_] = clf.coef_
        bias[clf.classes_] = clf.intercept_
    return coef, bias


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (``None``: as set), restoring the setting after (decoders are
    small-tensor work, which several threads beside a busy process slow down badly)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def class_counts(name: str, labels: Sequence[str], y: np.ndarray) -> np.ndarray:
    """Training examples per label; a label without one is an error naming it."""
    counts = np.bincount(y, minlength=len(labels))
    if (counts == 0).any():
        missing = [labels[i] for i in np.flatnonzero(counts == 0)]
        raise DataError(f"{name} needs at least one training example of every label; none for {missing}")
    return counts


def stratified_folds(y: np.ndarray, n_classes: int, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every example: each class's examples dealt round-robin over the folds in a
    seeded random order (the folds of a λ search by cross-validation on the training sample)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in range(n_classes):
        idx = np.flatnonzero(np.asarray(y) == c)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def epoch_choices(epochs: Any) -> tuple[int, ...]:
    """Candidate training lengths from an ``epochs`` parameter (a count, or a list chosen among by
    cross-validation), sorted; () when it is not a non-negative integer or a non-empty list of them."""
    many = list(epochs) if isinstance(epochs, list | tuple) else [epochs]
    if not many or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in many):
        return ()
    return tuple(sorted(set(many)))


@dataclass(frozen=True)
class LambdaSearch:
    """The decoders of a λ search by stratified k-fold cross-validation, trained as one batch: row ``i·k + f``
    trains λ = ``grid[i]`` on every fold but ``f``; the last ``len(grid)`` rows train each λ on all the data
    (so the chosen λ's final decoder comes out of the same training run). ``k = 0``: no cross-validation (too
    few examples per class), one row per λ on all the data."""

    grid: tuple[float, ...]
    k: int
    weights: Any  # torch.Tensor (M, n): which examples each decoder trains on
    lams: Any  # torch.Tensor (M,): each decoder's λ

    @classmethod
    def build(cls, y: np.ndarray, n_classes: int, grid: Sequence[float], folds: int, seed: int) -> LambdaSearch:
        import torch

        grid = tuple(grid)
        k = int(min(folds, np.bincount(np.asarray(y), minlength=n_classes).min()))
        if k < 2:
            return cls(grid, 0, torch.ones(len(grid), len(y)), torch.tensor(grid, dtype=torch.float32))
        fold = torch.from_numpy(stratified_folds(np.asarray(y), n_classes, k, seed))
        held = torch.tensor([f for _ in grid for f in range(k)])
        weights = torch.cat([(fold[None] != held[:, None]).float(), torch.ones(len(grid), len(y))])
        lams = torch.tensor([g for g in grid for _ in range(k)] + list(grid), dtype=torch.float32)
        return cls(grid, k, weights, lams)

    @classmethod
    def plan(cls, y: np.ndarray, n_classes: int, lam: float | str | None, lam_grid: Sequence[float], epochs: Any,
             folds: int, seed: int) -> tuple[LambdaSearch, tuple[int, ...]]:
        """The search a decoder's settings ask for, and the training lengths to snapshot: λ from {1/shots} ∪
        ``lam_grid`` when ``lam="cv"``, else fixed (a number; ``None``: 1/shots); lengths from ``epochs``
        (:func:`epoch_choices`). Cross-validated when λ or the length has candidates and every class has two
        examples or more; otherwise one decoder on all the data (λ = 1/shots for ``"cv"``) at the longest length."""
        shots = float(np.bincount(np.asarray(y), minlength=n_classes).mean())
        lengths = epoch_choices(epochs)
        grid = sorted({round(1.0 / shots, 6), *lam_grid}) if lam == "cv" else [
            1.0 / shots if lam is None else float(lam)]
        search = cls.build(y, n_classes, grid, folds if lam == "cv" or len(lengths) > 1 else 1, seed)
        if lam == "cv" and not search.k:  # too few examples per class to cross-validate
            search = cls.build(y, n_classes, [1.0 / shots], 1, seed)
        return search, lengths if search.k else (max(lengths),)

    def choose(self, snapshots: Mapping[int, tuple[Any, ...]], y: Any) -> tuple[int, int, dict[float, float]]:
        """(training length, row of the kept decoder, λ → CV accuracy) from snapshots of one training run (epochs
        → a tuple whose last item is every decoder's scores on the training examples, (M, n, C)); without
        cross-validation the longest length and the only row.

        A decoder whose scores are not finite at a length (its training diverged there: :func:`train_rows` marks it
        so) is no candidate at that length: a λ is chosen at a length only where all its rows — its
        cross-validation decoders and its final one — are finite. ``ValueError`` when no λ and length qualify."""
        import torch

        finite = {e: torch.isfinite(snap[-1]).flatten(1).all(1) for e, snap in snapshots.items()}
        if not self.k:
            ok = [e for e in snapshots if bool(finite[e][0])]
            if not ok:
                raise ValueError("no finite decoder")
            return max(ok), 0, {}
        usable = {e: [bool(f[i * self.k:(i + 1) * self.k].all() and f[self.n_cv + i]) for i in range(len(self.grid))]
                  for e, f in finite.items()}
        return self.pick_length({e: snap[-1][: self.n_cv] for e, snap in snapshots.items()}, y, usable)

    @property
    def n_cv(self) -> int:
        """Rows that are cross-validation decoders (the first ones)."""
        return len(self.grid) * self.k

    def lam(self, row: int) -> float:
        """The λ of a row, exactly as in the grid."""
        return self.grid[(row - self.n_cv) if row >= self.n_cv else row // max(self.k, 1)]

    def evaluate(self, held_scores: Any, y: Any) -> tuple[Any, Any]:
        """Cross-validated accuracy and log-loss of each λ (tensors of ``len(grid)``), from the CV decoders'
        scores on every training example (``held_scores`` (n_cv, n, C); each is judged on its held-out fold)."""
        import torch.nn.functional as F

        n, c = held_scores.shape[1:]
        correct = (held_scores.argmax(-1) == y[None]).float()
        ce = F.cross_entropy(held_scores.reshape(-1, c), y.repeat(self.n_cv), reduction="none").reshape(self.n_cv, n)
        held_out = 1.0 - self.weights[: self.n_cv]
        acc = (correct * held_out).sum(1).reshape(len(self.grid), self.k).sum(1) / n
        nll = (ce * held_out).sum(1).reshape(len(self.grid), self.k).sum(1) / n
        return acc, nll

    def pick(self, held_scores: Any, y: Any) -> tuple[int, dict[float, float]]:
        """The row of the chosen λ's final decoder and λ → cross-validated accuracy (:meth:`evaluate`); ties in
        accuracy go to the lower held-out log-loss."""
        if not self.k:
            return 0, {}
        _, row, accuracy = self.pick_length({0: held_scores}, y)
        return row, accuracy

    def pick_length(self, held: Mapping[int, Any], y: Any, usable: Mapping[int, Sequence[bool]] | None = None
                    ) -> tuple[int, int, dict[float, float]]:
        """λ and training length together, from the CV decoders' held-out scores after each candidate number of
        epochs (``held``: epochs → (n_cv, n, C) scores, snapshots of one run): the chosen length, the row of the
        chosen λ's final decoder, and λ → CV accuracy at that length. Best accuracy, then lowest log-loss, then
        the shorter training. ``usable``: epochs → whether each λ may be chosen at that length (default: all);
        the accuracy table leaves out the λ values that may not."""
        best: tuple[float, float, int, int] | None = None
        table = {}
        for e, scores in held.items():
            acc, nll = self.evaluate(scores, y)
            table[e] = acc
            for i in range(len(self.grid)):
                if usable is not None and not usable[e][i]:
                    continue
                key = (-round(float(acc[i]), 6), float(nll[i]), e, i)
                best = key if best is None or key < best else best
        if best is None:
            raise ValueError("no candidate training length")
        _, _, e, i = best
        return e, self.n_cv + i, {g: float(a) for j, (g, a) in enumerate(zip(self.grid, table[e], strict=True))
                                  if usable is None or usable[e][j]}


def train_rows(forward: Callable[[], Any], opt: Any, y: Any, weights: Any, epochs: int,
               snapshots: dict[int, Any], keep: Callable[[Any], Any], params: Sequence[Any] = ()) -> Any:
    """Full-batch training of M decoders at once (one per row of ``weights``: which examples it trains on):
    ``forward()`` gives every decoder's scores (M, n, C), each row's loss is its weighted cross-entropy, ``opt``
    steps ``epochs`` times. After every number of steps that is a key of ``snapshots`` it holds ``keep(scores)``
    — the scores of that step's own forward pass, taken before the update, so a snapshot costs no extra pass.
    Returns each decoder's loss per step (M, epochs).

    A decoder whose scores or loss stop being finite (a learning rate that diverges) is stopped there, alone: its
    parameters — the rows of ``params``, the tensors whose first axis is the decoder — go back to the last values
    that gave finite scores and stay there, its later losses are NaN, and its scores in later snapshots are NaN, so
    that no choice takes it for a decoder trained that long (:meth:`LambdaSearch.choose`). Training ends early when
    every decoder has stopped. Rows never mix (every operation is per row), so the others train on unchanged."""
    import torch
    import torch.nn.functional as F

    m, norm, losses = weights.shape[0], weights.sum(1).clamp_min(1.0), []
    alive = torch.ones(m, dtype=torch.bool)
    good = [p.detach().clone() for p in params]  # each row's last parameters with finite scores

    def stop_rows(rows: Any) -> None:
        with torch.no_grad():
            for p, g in zip(params, good, strict=True):
                p[rows] = g[rows]

    def marked(scores: Any) -> Any:
        if bool(alive.all()):
            return scores
        out = scores.detach().clone()
        out[~alive] = float("nan")
        return out

    for step in range(epochs + 1):
        last = step == epochs
        if last and step not in snapshots:
            break
        if not last:
            opt.zero_grad()
        with torch.no_grad() if last else contextlib.nullcontext():
            scores = forward()
        finite = torch.isfinite(scores.detach()).flatten(1).all(1)
        if not last:
            ce = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), y.repeat(m), reduction="none").reshape(m, -1)
            per_row = (ce * weights).sum(1) / norm
            finite &= torch.isfinite(per_row.detach())
        newly = alive & ~finite
        if bool(newly.any()):
            alive &= finite
            stop_rows(newly)
        with torch.no_grad():
            for p, g in zip(params, good, strict=True):
                if bool(alive.all()):
                    g.copy_(p.detach())
                else:
                    g[alive] = p.detach()[alive]
        if step in snapshots:
            snapshots[step] = keep(marked(scores.detach()))
        if last:
            break
        if not bool(alive.any()):  # every decoder has stopped: nothing left to train
            losses.append(torch.full((m,), float("nan")))
            rest = keep(marked(scores.detach()))
            for e in snapshots:
                if e > step:
                    snapshots[e] = rest
            losses.extend(torch.full((m,), float("nan")) for _ in range(epochs - step - 1))
            break
        torch.where(alive, per_row, torch.zeros_like(per_row)).sum().backward()
        opt.step()
        if not bool(alive.all()):
            stop_rows(~alive)
        losses.append(torch.where(alive, per_row.detach(), torch.full_like(per_row, float("nan"))))
    return torch.stack(losses).T if losses else torch.zeros(m, 0)


@dataclass(frozen=True)
class SearchedDecoder:
    """The decoder a :func:`fit_searched` run keeps: its λ, training length, λ → CV accuracy at that length,
    parameters (W, prototypes, radii) and loss per step; ``stopped`` says what diverged, when training did."""

    lam: float
    epochs: int
    cv_accuracy: dict[float, float]
    W: np.ndarray
    protos: np.ndarray
    radii: np.ndarray
    losses: list[float]
    stopped: str | None = None


def fit_searched(train: Callable[[Any, Any, int, dict[int, Any]], Any], y: np.ndarray, n_classes: int, *,
                 lam: float | str | None, lam_grid: Sequence[float], epochs: Any, folds: int,
                 seed: int, name: str = "decoder") -> SearchedDecoder:
    """Plan the search a prototype decoder's settings ask for (:meth:`LambdaSearch.plan`), train every row in one
    run — ``train(lams, weights, epochs, snapshots)`` returns the losses and fills ``snapshots`` with (a function
    giving one row's W, prototypes, radii, scores), as :func:`train_rows` does — and keep the chosen row.

    Decoders whose training went non-finite (:func:`train_rows` stops each at its last finite step) are never
    chosen; when no λ is left, the final decoder that stayed finite longest is kept as it was at its last finite
    step. Either way a warning names the step. No finite decoder at all (non-finite from the first step: the
    features or λ) is a one-line :class:`EdgetuneError`; a NaN decoder is never returned."""
    import warnings

    import torch

    search, choices = LambdaSearch.plan(y, n_classes, lam, lam_grid, epochs, folds, seed)
    snaps: dict[int, Any] = dict.fromkeys(choices)
    longest = max(choices)
    losses = train(search.lams, search.weights, longest, snaps)
    final_scores = snaps[longest][-1]

    def first_bad(row: int) -> int | None:
        """The first step whose forward pass was not finite for this row (None: it never diverged)."""
        bad = torch.nonzero(~torch.isfinite(losses[row, :longest])).flatten()
        if len(bad):
            return int(bad[0])
        return None if bool(torch.isfinite(final_scores[row]).all()) else longest

    stops = {r: b for r in range(len(search.lams)) if (b := first_bad(r)) is not None}
    stopped = None
    try:
        length, row, accuracy = search.choose(snaps, torch.from_numpy(np.asarray(y, dtype=np.int64)))
        kept_length = length
        if stops:
            stopped = (f"training went non-finite in {len(stops)} of {len(search.lams)} decoders (first at step "
                       f"{min(stops.values())}); none of them was chosen")
    except ValueError:  # no λ has finite decoders at any candidate length: keep the longest-lived final decoder
        finals = [search.n_cv + i for i in range(len(search.grid))] if search.k else [0]
        row = max(finals, key=lambda r: (stops.get(r, longest + 1), -r))
        b = stops.get(row, longest + 1)
        if b == 0:
            raise EdgetuneError(f"{name}: training gave non-finite scores from its first step (check the features "
                                f"and lam={lam!r}); no decoder to keep") from None
        length, kept_length, accuracy = longest, min(b - 1, longest), {}
        stopped = (f"training went non-finite at step {min(stops.values())}; kept the λ={search.lam(row):g} decoder "
                   f"as it was after {kept_length} step(s), its last finite one")
    if stopped is not None:
        warnings.warn(f"{name}: {stopped} (lower the learning rate)", stacklevel=3)
    weights_of, protos, radii, _ = snaps[length]
    W, P, R = (weights_of(row).numpy().copy(), protos[row].numpy().copy(), radii[row].numpy().copy())
    if not all(np.isfinite(a).all() for a in (W, P, R)):
        raise EdgetuneError(f"{name}: the kept decoder is not finite (training diverged); lower the learning rate")
    return SearchedDecoder(search.lam(row), kept_length, accuracy, W, P, R, losses[row, :kept_length].tolist(),
                           stopped)


def content_free_examples(template: Template) -> list[Example]:
    """Inputs with no content ("N/A" and the empty string) in every field the template names."""
    out = []
    for filler in ("N/A", ""):
        extra = {f: filler for f in template.fields if f not in ("text", "text_b", "mask")}
        out.append(Example(filler, filler, None, f"content-free:{filler}", extra))
    return out


def label_values(y: Any) -> dict[str, Any]:
    """Each distinct label of ``y`` by its name (``str``), as a plain Python value (a numpy scalar unwrapped)."""
    return {str(v): _plain_value(v) for v in np.asarray(y, dtype=object).ravel()}


def label_order(y: Any) -> list[str]:
    """The distinct labels of ``y`` as names, sorted by their own values (so 2 comes before 10), as
    ``numpy.unique`` orders scikit-learn's ``classes_``; by name where the values do not compare."""
    values = label_values(y)
    try:
        return [str(v) for v in sorted(set(values.values()))]
    except TypeError:
        return sorted(values)


def resolve_prompt(X: Any, template: str | None, label_words: Mapping[str, str] | str | None,
                   y: Sequence[str] | None = None) -> tuple[Template, dict[str, str], tuple[str, ...]]:
    """The template, label words and label order for training data ``X``: the method's own settings, else
    those of the task ``X`` was drawn from. With a template and no label words anywhere, each label's
    readable name is its word (``transfer_money`` → ``"transfer money"``)."""
    task = getattr(X, "task", None)
    template = template if template is not None else getattr(task, "template", None)
    words = label_words if label_words is not None else getattr(task, "label_words", None)
    if words is None and template is not None:
        names = X.labels if isinstance(X, Dataset) else label_order(y) if y is not None else ()
        words = {lab: readable_label(lab) for lab in names} or None
    if template is None or words is None:
        raise DataError("no prompt: pass template= (and label_words=, unless the label names are the words), "
                        "or fit on a task's sample")
    words = parse_label_words(words)
    labels = tuple(X.labels) if isinstance(X, Dataset) else tuple(words)
    if len(labels) < 2:  # checked before fitting: a classifier with one label has nothing to learn
        raise DataError(f"a classifier needs at least two labels; the training data has only "
                        f"{', '.join(map(repr, labels)) or 'none'}")
    missing = [lab for lab in labels if lab not in words]
    if missing:
        raise DataError(f"no label word for label(s) {missing}")
    return Template(template), words, labels
