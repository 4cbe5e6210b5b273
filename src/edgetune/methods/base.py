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


class Method(ABC):
    """``fit`` on labelled examples, ``predict`` label names, ``save``/``load`` a folder.

    Subclasses implement :meth:`fit`, :meth:`decision_function`, :meth:`costs`, :meth:`save` and
    :meth:`load`; this class gives every method the same backend handling, label checks, ``predict``,
    ``predict_proba`` and parameter introspection.

    Learned attributes every fitted method has:
        labels_: label names, in the order of the columns of ``decision_function``/``predict_proba``.
        identity_, model_name_: the model it was fitted on (a load against another model is refused).
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
        self.model = self.default_model if model is None else model
        self._backend: Backend | None = None if isinstance(self.model, str) else self.model
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

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as stored."""
        return {k: getattr(self, k) for k in self.param_names()}

    def saved_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.get_params().items() if k not in RUNTIME_PARAMS}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- backend ------------------------------------------------------------------------------------------
    def _load_backend(self) -> Backend:
        """Build the backend from the model name (subclasses choose cache and kind)."""
        return load_backend(str(self.model), **self._backend_options)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
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

    # -- fitting helpers ------------------------------------------------------------------------------------
    def _validate_params(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`ParamError` for a parameter value no run can use (called first in ``fit``)."""

    def _prompting(self, X: Any, y: Sequence[str] | None = None) -> tuple[Template, dict[str, str], tuple[str, ...]]:
        return resolve_prompt(X, getattr(self, "template", None), getattr(self, "label_words", None), y)

    @staticmethod
    def _labelled(X: Any, y: Sequence[str] | None, labels: Sequence[str]) -> tuple[list[Example], np.ndarray]:
        """Training examples and their label indices in ``labels``; every example needs a known label."""
        examples = as_examples(X, y)
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
            raise EdgetuneError(f"this {self.name} is not fitted yet: call fit() first")

    # -- the estimator surface ------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, X: Any, y: Sequence[str] | None = None) -> Method:
        """Fit on a task sample (a :class:`Dataset`) or on texts ``X`` with label names ``y``."""

    @abstractmethod
    def decision_function(self, X: Any) -> np.ndarray:
        """(n, C) class scores in the order of ``labels_``; the prediction is their argmax."""

    def predict(self, X: Any) -> list[str]:
        return self.labels_from_scores(self.decision_function([X] if isinstance(X, str) else X))

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.exp(log_softmax(self.decision_function([X] if isinstance(X, str) else X)))

    def labels_from_scores(self, scores: np.ndarray) -> list[str]:
        return [self.labels_[i] for i in np.asarray(scores).argmax(axis=1)]

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
        return {"format": FORMAT_VERSION, "method": self.name, "edge": self.edge,
                "params": _jsonable(self.saved_params()), "labels": list(self.labels_),
                "model": self.model_name_, "model_identity": self.identity_}


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
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise EdgetuneError(f"{str(path)!r} is not a saved edgetune model (no config.json)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EdgetuneError(f"{cfg_path}: malformed JSON ({exc.msg})") from None
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
    return config, tensors


def short_identity(identity: str) -> str:
    """A model identity for a message: as is when short, else its start and a digest of the rest (a local
    folder's identity holds its whole config.json)."""
    if len(identity) <= 80:
        return identity
    import hashlib

    return f"{identity[:60]}… #{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def load(path: str | os.PathLike, model: str | Backend | None = None) -> Method:
    """Load any saved method; ``model`` (a name or backend) must be the model it was trained with."""
    config, _ = read_saved(path)
    return get_method(config.get("method", "?")).load(path, model=model)


def saved_backend_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """How to rebuild, by model name, the backend a saved method was trained with (see
    :func:`edgetune.backends.saved_backend_options`)."""
    return backend_options(config.get("backend_kind"), config.get("backend_settings"))


def restore(cls: type[Method], path: str | os.PathLike, model: str | Backend | None
            ) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """A ``cls`` built from a saved folder's parameters, with the labels, prompt and model identity it was
    trained with; returns it with the saved config and arrays for the method-specific rest."""
    config, tensors = read_saved(path)
    if config.get("method") != cls.name:
        raise IncompatibleError(f"{str(path)!r} holds a {config.get('method')!r} model, not {cls.name!r}")
    obj = cls(model=model if model is not None else config["model"], **config.get("params", {}))
    obj.labels_ = tuple(config["labels"])
    if "template" in config:
        obj.template_ = Template(config["template"])
        obj.words_ = list(config["label_words"])
    obj.identity_, obj.model_name_ = config["model_identity"], config["model"]
    obj._backend_options = saved_backend_options(config)  # a backend rebuilt by name is built as trained
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
        raise EdgetuneError(f"{name} needs at least one training example of every label; none for {missing}")
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
        cross-validation the longest length and the only row."""
        if not self.k:
            return max(snapshots), 0, {}
        return self.pick_length({e: snap[-1][: self.n_cv] for e, snap in snapshots.items()}, y)

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

    def pick_length(self, held: Mapping[int, Any], y: Any) -> tuple[int, int, dict[float, float]]:
        """λ and training length together, from the CV decoders' held-out scores after each candidate number of
        epochs (``held``: epochs → (n_cv, n, C) scores, snapshots of one run): the chosen length, the row of the
        chosen λ's final decoder, and λ → CV accuracy at that length. Best accuracy, then lowest log-loss, then
        the shorter training."""
        best: tuple[float, float, int, int] | None = None
        table = {}
        for e, scores in held.items():
            acc, nll = self.evaluate(scores, y)
            table[e] = acc
            for i in range(len(self.grid)):
                key = (-round(float(acc[i]), 6), float(nll[i]), e, i)
                best = key if best is None or key < best else best
        if best is None:
            raise ValueError("no candidate training length")
        _, _, e, i = best
        return e, self.n_cv + i, {g: float(a) for g, a in zip(self.grid, table[e], strict=True)}


def train_rows(forward: Callable[[], Any], opt: Any, y: Any, weights: Any, epochs: int,
               snapshots: dict[int, Any], keep: Callable[[Any], Any]) -> Any:
    """Full-batch training of M decoders at once (one per row of ``weights``: which examples it trains on):
    ``forward()`` gives every decoder's scores (M, n, C), each row's loss is its weighted cross-entropy, ``opt``
    steps ``epochs`` times. After every number of steps that is a key of ``snapshots`` it holds ``keep(scores)``
    — the scores of that step's own forward pass, taken before the update, so a snapshot costs no extra pass.
    Returns each decoder's loss per step (M, epochs)."""
    import torch
    import torch.nn.functional as F

    m, norm, losses = weights.shape[0], weights.sum(1).clamp_min(1.0), []
    for step in range(epochs + 1):
        if step == epochs:
            if step in snapshots:
                with torch.no_grad():
                    snapshots[step] = keep(forward())
            break
        opt.zero_grad()
        scores = forward()
        if step in snapshots:
            snapshots[step] = keep(scores.detach())
        ce = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), y.repeat(m), reduction="none").reshape(m, -1)
        per_row = (ce * weights).sum(1) / norm
        per_row.sum().backward()
        opt.step()
        losses.append(per_row.detach())
    return torch.stack(losses).T if losses else torch.zeros(m, 0)


@dataclass(frozen=True)
class SearchedDecoder:
    """The decoder a :func:`fit_searched` run keeps: its λ, training length, λ → CV accuracy at that length,
    parameters (W, prototypes, radii) and loss per step."""

    lam: float
    epochs: int
    cv_accuracy: dict[float, float]
    W: np.ndarray
    protos: np.ndarray
    radii: np.ndarray
    losses: list[float]


def fit_searched(train: Callable[[Any, Any, int, dict[int, Any]], Any], y: np.ndarray, n_classes: int, *,
                 lam: float | str | None, lam_grid: Sequence[float], epochs: Any, folds: int,
                 seed: int) -> SearchedDecoder:
    """Plan the search a prototype decoder's settings ask for (:meth:`LambdaSearch.plan`), train every row in one
    run — ``train(lams, weights, epochs, snapshots)`` returns the losses and fills ``snapshots`` with (a function
    giving one row's W, prototypes, radii, scores), as :func:`train_rows` does — and keep the chosen row."""
    import torch

    search, choices = LambdaSearch.plan(y, n_classes, lam, lam_grid, epochs, folds, seed)
    snaps: dict[int, Any] = dict.fromkeys(choices)
    losses = train(search.lams, search.weights, max(choices), snaps)
    length, row, accuracy = search.choose(snaps, torch.from_numpy(np.asarray(y, dtype=np.int64)))
    weights_of, protos, radii, _ = snaps[length]
    return SearchedDecoder(search.lam(row), length, accuracy, weights_of(row).numpy().copy(),
                           protos[row].numpy().copy(), radii[row].numpy().copy(), losses[row, :length].tolist())


def content_free_examples(template: Template) -> list[Example]:
    """Inputs with no content ("N/A" and the empty string) in every field the template names."""
    out = []
    for filler in ("N/A", ""):
        extra = {f: filler for f in template.fields if f not in ("text", "text_b", "mask")}
        out.append(Example(filler, filler, None, f"content-free:{filler}", extra))
    return out


def resolve_prompt(X: Any, template: str | None, label_words: Mapping[str, str] | str | None,
                   y: Sequence[str] | None = None) -> tuple[Template, dict[str, str], tuple[str, ...]]:
    """The template, label words and label order for training data ``X``: the method's own settings, else
    those of the task ``X`` was drawn from. With a template and no label words anywhere, each label's
    readable name is its word (``transfer_money`` → ``"transfer money"``)."""
    task = getattr(X, "task", None)
    template = template if template is not None else getattr(task, "template", None)
    words = label_words if label_words is not None else getattr(task, "label_words", None)
    if words is None and template is not None:
        names = X.labels if isinstance(X, Dataset) else sorted({str(v) for v in y}) if y is not None else ()
        words = {lab: readable_label(lab) for lab in names} or None
    if template is None or words is None:
        raise DataError("no prompt: pass template= (and label_words=, unless the label names are the words), "
                        "or fit on a task's sample")
    words = parse_label_words(words)
    labels = tuple(X.labels) if isinstance(X, Dataset) else tuple(words)
    missing = [lab for lab in labels if lab not in words]
    if missing:
        raise DataError(f"no label word for label(s) {missing}")
    return Template(template), words, labels
