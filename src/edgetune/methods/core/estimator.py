"""The estimator surface every method shares: a scikit-learn classifier with edgetune's backend handling.

scikit-learn conventions: parameters go to the constructor and are stored as given; they are validated in ``fit``
(by the method's config, :mod:`edgetune.methods.core.config`); ``fit`` returns ``self``; learned state ends with
``_`` (``labels_`` always). A method's constructor, its facts (name, edge, ...) and its docstring's Parameters are
generated from its config when the class is defined (:meth:`Method.__init_subclass__`).
"""

from __future__ import annotations

import copy
import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from ...backends import Backend, load_backend
from ...backends.base import NeedsWeightsError
from ...backends.models import DEFAULT_MODEL
from ...data.example import Dataset, Example, as_examples, is_label_list
from ...data.tasks import parse_label_words, readable_label
from ...data.templates import Template
from ...errors import DataError, EdgetuneError, IncompatibleError
from .config import RUNTIME_PARAMS, MethodConfig, ParamError
from .decoders import log_softmax
from .multilabel import choose_threshold, decide, sigmoid
from .persistence import FORMAT_VERSION, jsonable, short_identity

#: what a method class takes from its config (besides the parameters)
DECLARED = ("name", "display_name", "edge", "needs", "budget_rule", "companions", "smoke_params", "multi_label")


class NotFittedError(EdgetuneError, SklearnNotFittedError):
    """The method is used before ``fit`` (or ``load``); scikit-learn's ``NotFittedError`` too."""



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

    config: ClassVar[type[MethodConfig]] = MethodConfig  # the declaration: parameters and the facts below
    name: ClassVar[str]
    display_name: ClassVar[str]
    edge: ClassVar[str]
    needs: ClassVar[str]
    default_model: ClassVar[str] = DEFAULT_MODEL
    budget_rule: ClassVar[str | None] = None
    companions: ClassVar[tuple[str, ...]] = ()
    smoke_params: ClassVar[dict[str, Any]] = {}
    #: fits multi-label data too (from the config)
    multi_label: ClassVar[bool] = False
    #: the learned attribute whose presence means "fitted" (or loaded)
    fitted_attribute: ClassVar[str] = "labels_"

    def __init__(self, model: str | Backend | None = None) -> None:
        self.model = model  # stored as given (scikit-learn); None means the method's default_model
        self._backend: Backend | None = None if model is None or isinstance(model, str) else model
        self._backend_options: dict[str, Any] = {}  # how to rebuild the backend by name (set by load)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A class that names a ``config`` takes from it its facts (``name``, ``edge``, ...), a constructor with
        one keyword parameter per declared parameter (stored as given), and its docstring's Parameters section."""
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("config")
        if config is None:
            return
        for attr in DECLARED:
            value = getattr(config, attr)
            if value or attr == "budget_rule":
                setattr(cls, attr, value)
        cls.default_model = config.default_model or DEFAULT_MODEL
        if "__init__" not in cls.__dict__:
            cls.__init__ = _constructor(cls, config)  # type: ignore[method-assign]
        cls.__doc__ = _with_parameters(cls.__doc__ or "", config)

    # -- introspection ----------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameters (``model`` aside), as the config declares them."""
        return cls.config.param_names()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each parameter's declared default."""
        return cls.config.defaults()

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(["model", *cls.param_names()])

    def settings(self) -> MethodConfig:
        """The parameters as stored, in the method's config (what trainers read)."""
        return self.config(**{k: getattr(self, k) for k in self.param_names()})

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters as stored, ``model`` included (scikit-learn's protocol; an edgetune method
        holds no nested estimator, so ``deep`` changes nothing)."""
        return {"model": self.model, **{k: getattr(self, k) for k in self.param_names()}}

    def set_params(self, **params: Any) -> Method:
        """Set constructor parameters (scikit-learn's protocol); a new ``model`` drops the loaded backend."""
        valid = ["model", *self.param_names()]
        params = self.config.renamed(params, where=" (set_params)")
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
        from ...backends.models import local_identity

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
        self.settings().check()

    @classmethod
    def validate_params(cls, params: Mapping[str, Any] | None = None, *, warn: bool = True) -> dict[str, Any]:
        """Raise a one-line :class:`ParamError` for ``params`` (name -> value) this method cannot run with: an
        unknown name, or a value its config refuses (the checks ``fit`` makes first). Builds no backend, loads no
        model and imports nothing heavy, so the command line and a bench config can check a run before it starts.
        Returns ``params`` with deprecated spellings renamed (warning when ``warn``)."""
        params = cls.config.renamed(params or {}, warn=warn)
        unknown = sorted(set(params) - set(cls.param_names()))
        if unknown:
            raise ParamError(f"{cls.name} has no parameter(s) {unknown}; it takes {', '.join(cls.param_names())}")
        cls.config(**params).check()
        return params

    def _prompting(self, X: Any, y: Sequence[str] | None = None) -> tuple[Template, dict[str, str], tuple[str, ...]]:
        return resolve_prompt(X, getattr(self, "template", None), getattr(self, "label_words", None), y)

    def _labelled(self, X: Any, y: Any, labels: Sequence[str]) -> tuple[list[Example], np.ndarray]:
        """Training examples and their label indices in ``labels``; every example needs a known label. With
        ``y`` (the training labels), the labels' own values are kept for ``classes_`` and ``predict``."""
        examples = self.examples(X, y)
        if y is not None:
            given = label_values(y)
            values = tuple(given.get(lab, lab) for lab in labels)
            self.label_values_ = None if all(isinstance(v, str) for v in values) else values
        if not examples:
            raise DataError("no training examples")
        self.multi_label_ = any(e.labels is not None for e in examples)
        if self.multi_label_:
            return examples, self._multi_label_targets(X, examples, labels)
        names = [e.label for e in examples]
        if any(lab is None for lab in names):
            raise DataError("every training example needs a label (pass y=)")
        unknown = sorted({lab for lab in names if lab not in labels})
        if unknown:
            raise DataError(f"unknown label(s) {unknown}; the labels are {list(labels)}")
        index = {lab: i for i, lab in enumerate(labels)}
        return examples, np.array([index[lab] for lab in names], dtype=np.int64)

    def _multi_label_targets(self, X: Any, examples: list[Example], labels: Sequence[str]) -> np.ndarray:
        """The (n, C) 0/1 targets of multi-label training examples; a method that fits one label per text refuses
        them in one line."""
        self._refuse_multi_label()
        index = {lab: i for i, lab in enumerate(labels)}
        Y = np.zeros((len(examples), len(labels)), dtype=np.int64)
        for row, e in enumerate(examples):
            names = e.labels if e.labels is not None else (() if e.label is None else (e.label,))
            unknown = sorted(set(names) - set(index))
            if unknown:
                raise DataError(f"unknown label(s) {unknown}; the labels are {list(labels)}")
            Y[row, [index[name] for name in names]] = 1
        task = getattr(X, "task", None)
        self.allow_empty_ = bool(getattr(task, "allow_empty", False)) or bool((Y.sum(axis=1) == 0).any())
        return Y

    def _refuse_multi_label(self) -> None:
        """One line for a method that fits one label per text, given several per text (nothing for one that fits
        them)."""
        if not self.multi_label:
            from ..configs import multi_label_methods

            raise DataError(f"{self.name} fits one label per text; this data has several per text (multi-label). "
                            f"Methods that fit multi-label data: {', '.join(multi_label_methods())}")

    def _set_thresholds(self, Y: np.ndarray, out_of_fold: Any) -> None:
        """``thresholds_`` (one per label, all equal): ``threshold`` as given, or for ``"cv"`` the one with the best
        micro-F1 on the out-of-fold probabilities ``out_of_fold()`` gives (``cv_micro_f1_`` keeps that F1)."""
        if self.threshold != "cv":
            self.threshold_, self.cv_micro_f1_ = float(self.threshold), None
        else:
            self.threshold_, self.cv_micro_f1_ = choose_threshold(out_of_fold(), Y, self.allow_empty_)
        self.thresholds_ = np.full(Y.shape[1], self.threshold_, dtype=np.float32)

    @staticmethod
    def _indicator_targets(y: Any, names: Sequence[Any] | None = None) -> tuple[Any, list[Any] | None]:
        """``(y, None)`` for ``y`` as given, except a 0/1 indicator matrix (scikit-learn's multi-label format, e.g.
        from ``MultiLabelBinarizer``), which becomes ``(label lists, columns)``: column j is label ``columns[j]`` =
        ``names[j]`` (the method's label words or labels in their order; else the number j). A fit keeps the columns
        as ``indicator_columns_``, so ``predict`` answers in an indicator matrix too."""
        if y is None or isinstance(y, list | tuple | Dataset):
            return y, None
        if hasattr(y, "toarray"):  # a scipy sparse matrix
            y = y.toarray()
        if not hasattr(y, "shape") or len(y.shape) != 2 or y.shape[1] == 1:
            return y, None
        arr = np.asarray(y)
        if not np.isin(arr, (0, 1)).all():
            raise DataError("a 2-D y is a multi-label indicator matrix (one column per label, 0 or 1); this one holds "
                            "other values")
        columns = list(names) if names is not None else list(range(arr.shape[1]))
        if len(columns) != arr.shape[1]:
            raise DataError(f"the indicator matrix has {arr.shape[1]} columns but {len(columns)} labels are named; "
                            "give one label (word) per column, in column order")
        return [tuple(columns[j] for j in np.flatnonzero(row)) for row in arr], columns

    def examples(self, X: Any, y: Any = None) -> list[Example]:
        """The inputs ``X`` (and labels ``y``) as examples, a DataFrame read from ``text_col``/``text_b_col``; one
        string without labels is one input (``predict("...")``)."""
        one = isinstance(X, str) and y is None
        return as_examples([X] if one else X, y, text_col=self.text_col, text_b_col=self.text_b_col)

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
        ``classes_[0]`` (the difference of their :meth:`class_scores`, a log-odds); else the (n, C) class scores
        (multi-label: each label's logit)."""
        scores = np.asarray(self.class_scores(X))
        if getattr(self, "multi_label_", False):
            return scores
        return scores[:, 1] - scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 2 else scores

    def predict(self, X: Any) -> Any:
        """The label of each input, as the labels were given to ``fit`` (names, or ints, …). No inputs: an
        empty list, where scikit-learn raises (a labelling tool given an empty batch has nothing to label).
        Multi-label: each input's list of labels (a 0/1 indicator matrix when ``fit`` got one)."""
        scores = np.asarray(self.class_scores([X] if isinstance(X, str) else X))
        if getattr(self, "multi_label_", False):
            return self._label_lists(self.decide_scores(scores))
        return [] if len(scores) == 0 else self.classes_[scores.argmax(axis=1)].tolist()

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) class probabilities in the order of ``classes_`` (rows sum to 1); multi-label: each label's own
        probability."""
        scores = self.class_scores([X] if isinstance(X, str) else X)
        if getattr(self, "multi_label_", False):
            return sigmoid(scores)
        return np.exp(log_softmax(scores))

    def decide_scores(self, scores: Any) -> np.ndarray:
        """Multi-label decisions (n, C booleans) from :meth:`class_scores`: each label whose probability reaches
        ``thresholds_``; a text with none gets its most probable label unless the training data had empty lists."""
        return decide(sigmoid(scores), self.thresholds_, getattr(self, "allow_empty_", False))

    def _label_lists(self, decided: np.ndarray) -> Any:
        columns = getattr(self, "indicator_columns_", None)
        if columns is not None:  # fitted on an indicator matrix: answer in one, columns as given
            where = {str(c): j for j, c in enumerate(columns)}
            out = np.zeros((len(decided), len(columns)), dtype=np.int64)
            for i, lab in enumerate(self.labels_):
                out[:, where[lab]] = decided[:, i]
            return out
        classes = self.classes_.tolist()
        return [[classes[j] for j in np.flatnonzero(row)] for row in decided]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy (scikit-learn's); multi-label: subset accuracy, the share of texts whose label set is
        exactly right (scikit-learn's ``accuracy_score`` on indicator matrices); ``y`` label lists or an indicator."""
        if not getattr(self, "multi_label_", False):
            return float(super().score(X, y, sample_weight))
        columns = getattr(self, "indicator_columns_", None)
        truth, _ = self._indicator_targets(y, columns)  # label lists, or an indicator matrix read as label lists
        predicted, _ = self._indicator_targets(self.predict(X), columns)
        as_sets = [set(map(str, row)) for row in truth]
        got = [set(map(str, row)) for row in predicted]
        weights = np.ones(len(got)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return float(np.average([a == b for a, b in zip(as_sets, got, strict=True)], weights=weights))

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

    def _multi_label_config(self) -> dict[str, Any]:
        """What a saved multi-label method records beyond its arrays: its thresholds and how it answers."""
        if not getattr(self, "multi_label_", False):
            return {}
        columns = getattr(self, "indicator_columns_", None)
        return {"multi_label": {"thresholds": [float(t) for t in self.thresholds_],
                                "allow_empty": bool(self.allow_empty_),
                                **({"indicator_columns": list(columns)} if columns is not None else {})}}

    def _restore_multi_label(self, path: Any, config: Mapping[str, Any]) -> None:
        """Read back :meth:`_multi_label_config` (a single-label save: nothing)."""
        info = config.get("multi_label")
        self.multi_label_ = info is not None
        if info is None:
            return
        thresholds = info.get("thresholds") if isinstance(info, Mapping) else None
        if (not isinstance(thresholds, list) or len(thresholds) != len(self.labels_)
                or not all(isinstance(t, int | float) and 0 < t < 1 for t in thresholds)):
            raise IncompatibleError(f"{str(path)!r}: config.json's multi_label thresholds must be {len(self.labels_)} "
                                    "numbers in (0, 1); save or train the model again")
        self.thresholds_ = np.asarray(thresholds, dtype=np.float32)
        self.allow_empty_ = bool(info.get("allow_empty", False))
        self.indicator_columns_ = info.get("indicator_columns")

    def _base_config(self) -> dict[str, Any]:
        """What every saved method records: format, method, parameters, labels and the model identity."""
        config = {"format": FORMAT_VERSION, "method": self.name, "edge": self.edge,
                  "params": jsonable(self.saved_params()), "labels": list(self.labels_),
                  "model": self.model_name_, "model_identity": self.identity_}
        values = getattr(self, "label_values_", None)
        if values is not None and all(isinstance(v, int | float | bool) for v in values):
            config["label_values"] = list(values)  # labels given as numbers: predict returns numbers after a load
        return config



#: parameters a method that fits other methods (ensemble, auto) hands on to each that takes them and sets none
SHARED_PARAMS = ("template", "label_words", "text_col", "text_b_col", "seed", "class_weight")


def sub_method(owner: Method, name: str, params: Mapping[str, Any], model: Any) -> Method:
    """An unfitted method ``name`` with ``params`` on ``model``, given ``owner``'s :data:`SHARED_PARAMS` where it
    takes them and ``params`` sets none (the members of an ensemble, the candidates of ``auto``)."""
    from .registry import get_method

    cls = get_method(name)
    given = {k: getattr(owner, k) for k in SHARED_PARAMS
             if getattr(owner, k, None) is not None and k in cls.param_names() and k not in params}
    return cls(model=model, **{**given, **cls.config.renamed(dict(params), warn=False)})


def _constructor(cls: type, config: type[MethodConfig]) -> Any:
    """``__init__(self, model=None, *, <each declared parameter>=<its default>)``, storing each as given."""
    defaults = config.defaults()
    names = list(defaults)

    def __init__(self: Method, model: str | Backend | None = None, **params: Any) -> None:
        params = config.renamed(params, where="")
        unknown = [k for k in params if k not in defaults]
        if unknown:
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {unknown[0]!r}")
        Method.__init__(self, model)
        for k in names:
            setattr(self, k, params.get(k, defaults[k]))

    P = inspect.Parameter
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [P("self", P.POSITIONAL_OR_KEYWORD), P("model", P.POSITIONAL_OR_KEYWORD, default=None),
         *(P(k, P.KEYWORD_ONLY, default=defaults[k]) for k in names)])
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__doc__ = f"Store the parameters as given (see :class:`{config.__name__}`)."
    return __init__


def _with_parameters(doc: str, config: type[MethodConfig]) -> str:
    """``doc`` with a numpydoc Parameters section written from ``config``, before its Attributes section (or at
    the end)."""
    lines = ["Parameters", "----------",
             "model : str or Backend, default=None",
             "    The frozen model: a packaged name, a local folder, a hub id or a backend (None: the default model)."]
    for p in config.params().values():
        default = "(required)" if p.default is MISSING else f"default={p.default!r}"
        lines += [f"{p.name} : {p.type}, {default}", f"    {p.help[:1].upper()}{p.help[1:]}."]
    head, sep, tail = inspect.cleandoc(doc).partition("\nAttributes\n----------")
    text = head.rstrip() + "\n\n" + "\n".join(lines) + ("\n\n" + sep.strip("\n") + tail if sep else "")
    first, _, rest = text.partition("\n")
    return first + "\n" + "\n".join("    " + line if line else "" for line in rest.splitlines()) + "\n"


def _plain_value(value: Any) -> Any:
    """A label value as a plain Python object (a numpy scalar becomes its Python counterpart)."""
    return value.item() if isinstance(value, np.generic) else value



def content_free_examples(template: Template) -> list[Example]:
    """Inputs with no content ("N/A" and the empty string) in every field the template names."""
    out = []
    for filler in ("N/A", ""):
        extra = {f: filler for f in template.fields if f not in ("text", "text_b", "mask")}
        out.append(Example(filler, filler, None, f"content-free:{filler}", extra))
    return out


def label_values(y: Any) -> dict[str, Any]:
    """Each distinct label of ``y`` by its name (``str``), as a plain Python value (a numpy scalar unwrapped); the
    labels of every list, for multi-label ``y`` (a list of label lists)."""
    items = list(y.tolist() if hasattr(y, "tolist") else y)
    if any(is_label_list(v) for v in items):
        return {str(v): _plain_value(v) for row in items for v in (row if is_label_list(row) else [row])}
    return {str(v): _plain_value(v) for v in np.asarray(y, dtype=object).ravel()}


def label_order(y: Any) -> list[str]:
    """The distinct labels of ``y`` as names, sorted by their own values (so 2 comes before 10), as
    ``numpy.unique`` orders scikit-learn's ``classes_``; by name where the values do not compare."""
    values = label_values(y)
    try:
        return [str(v) for v in sorted(set(values.values()))]
    except TypeError:
        return sorted(values)


def resolve_prompt(X: Any, template: str | int | None, label_words: Mapping[str, str] | str | None,
                   y: Sequence[str] | None = None) -> tuple[Template, dict[str, str], tuple[str, ...]]:
    """The template, label words and label order for training data ``X``: the method's own settings, else
    those of the task ``X`` was drawn from (a number picks one of the task's templates, 0 its main one). With a
    template and no label words anywhere, each label's readable name is its word (``transfer_money`` →
    ``"transfer money"``)."""
    task = getattr(X, "task", None)
    if isinstance(template, int) and not isinstance(template, bool):
        choices = task.all_templates if task is not None else []
        if not choices:
            raise DataError(f"template={template} picks one of the task's templates; this data comes from no task: "
                            "pass the prompt itself")
        if template >= len(choices):
            raise DataError(f"template={template}: task {task.name!r} has {len(choices)} template(s), numbered "
                            f"0 to {len(choices) - 1}")
        template = choices[template]
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
