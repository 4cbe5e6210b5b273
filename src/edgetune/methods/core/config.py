"""Method declarations: each method's parameters, declared once, readable without torch.

A method's *config* (a dataclass, like PEFT's ``LoraConfig`` or SetFit's ``TrainingArguments``) holds, for every
constructor parameter, its type, default, validation and one line of help, plus the class-level facts the rest
of edgetune needs to know (registry name, display name, edge, what it needs from a backend, default model,
budget rule, companions, smoke settings, deprecated spellings). Everything reads it: the method's constructor
(generated from it, so scikit-learn's ``get_params`` sees real keyword parameters), the method's docstring
(its Parameters section), :meth:`Method.validate_params`, the command line's flags and their ``--help`` (which
import no torch: a config module imports only this one), the bench's checks and the contract tests.

The family configs (:class:`OutputEdgeConfig`, :class:`PrototypeDecoderConfig`, :class:`InputEdgeConfig`,
:class:`GradientConfig` — consumed as is by :class:`~edgetune.methods.core.trainers.AdamWTrainer` —,
:class:`SoftPromptConfig`, :class:`FactoredPromptConfig`, :class:`BlackBoxConfig`, :class:`ProjectedConfig`) declare
what a family shares; a method's config subclasses one and adds its own.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import EdgetuneError

EDGES = ("output", "input", "body")
NEEDS = ("features", "weights", "encoder")
#: constructor parameters that steer a run, not the method (never shown as knobs, never saved)
RUNTIME_PARAMS = ("progress",)
#: the largest learning rate (or learning-rate ratio) a method accepts: Adam/AdamW move every parameter by about
#: the rate per step, and no parameter these methods train is anywhere near that scale, so a larger rate is a typo
#: (``--lr 1e308``), refused before anything runs; a finite rate below it that still diverges is caught in training
MAX_LR = 1e3
#: the largest ``seed`` (numpy's and scikit-learn's seeds are 32-bit)
MAX_SEED = 2**32 - 1
PROMPT_INITS = ("vocab", "text", "range", "zeros")
#: A soft prompt's learning rate as a ratio to the backbone's embedding scale (``lr_prompt="auto"``): 0.1 × 0.136 =
#: 0.014 on SmolLM2, 0.1 × 1.03 = 0.10 on Gemma-3-270M (why this default: benchmarks/results/README.md, 'Where the
#: defaults come from').
PROMPT_LR_RATIO = 0.1
#: the ratio ACCEPT's and LAMP's factor rule (``factor_rates``) was measured with: their ``"auto"`` keeps it
FACTOR_LR_RATIO = 0.3
INPUT_COLUMNS = ("text_col", "text_b_col")  # every method's: where a DataFrame's texts are
TEMPLATE_EXAMPLE = "'{text} It was {mask}'"
SELECT_BY = ("loss", "accuracy")  # which dev checkpoint a gradient method keeps (see AdamWTrainer)


class ParamError(EdgetuneError):
    """A method parameter has a value no run can use."""


# -- value checks: each raises a one-line ParamError naming the owner and the parameter --------------------------
def is_number(value: Any) -> bool:
    """A real number (numpy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def _whole_number(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def check_number(owner: str, name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, none_ok: bool = False) -> None:
    """``value`` is a finite number in [low, high] (an end excluded when ``low_open``/``high_open``; ``None`` is no
    bound); ``none_ok``: ``None`` is accepted too."""
    if value is None and none_ok:
        return
    ok = is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if low is not None or high is not None else ""
        raise ParamError(f"{owner}: {name} must be a finite number{where}{' or None' if none_ok else ''}, "
                         f"not {value!r}")


def check_whole(owner: str, name: str, value: Any, low: int = 0, high: int | None = None, *,
                none_ok: bool = False) -> None:
    """``value`` is a whole number from ``low`` to ``high`` (``None`` accepted when ``none_ok``)."""
    if value is None and none_ok:
        return
    if not _whole_number(value) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"≥ {low}"
        raise ParamError(f"{owner}: {name} must be a whole number {span}{' or None' if none_ok else ''}, "
                         f"not {value!r}")


Check = Callable[[str, str, Any], None]


def value_from_text(text: str) -> Any:
    """A parameter value written as text (a command-line flag, ``"name:key=value"``): an int, a float, a bool,
    none, or the text itself."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def whole(low: int = 0, high: int | None = None, *, none_ok: bool = False) -> Check:
    """A check: a whole number from ``low`` (to ``high``)."""
    return lambda owner, name, value: check_whole(owner, name, value, low, high, none_ok=none_ok)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           none_ok: bool = False) -> Check:
    """A check: a finite number in the range."""
    return lambda owner, name, value: check_number(owner, name, value, low, high, low_open=low_open,
                                                   high_open=high_open, none_ok=none_ok)


def positive(*, none_ok: bool = False) -> Check:
    """A check: a finite number > 0."""
    return number(0, low_open=True, none_ok=none_ok)


def learning_rate(*, auto: bool = False) -> Check:
    """A check: a finite rate in (0, :data:`MAX_LR`] (or ``"auto"`` where ``auto``)."""

    def check(owner: str, name: str, value: Any) -> None:
        if auto and value == "auto":
            return
        if auto and not is_number(value):
            raise ParamError(f"{owner}: {name} must be a finite number in (0, {MAX_LR:g}] or 'auto', not {value!r}")
        check_number(owner, name, value, 0, MAX_LR, low_open=True)

    return check


def seed() -> Check:
    """A check: a seed (a whole number that fits 32 bits)."""
    return whole(0, MAX_SEED)


def one_of(*choices: Any) -> Check:
    """A check: one of ``choices``."""

    def check(owner: str, name: str, value: Any) -> None:
        if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
            raise ParamError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, not {value!r}")

    return check


def text(*, none_ok: bool = True, example: str = "") -> Check:
    """A check: a string (or ``None``)."""

    def check(owner: str, name: str, value: Any) -> None:
        if not (isinstance(value, str) or (value is None and none_ok)):
            raise ParamError(f"{owner}: {name} must be a string{f' (e.g. {example})' if example else ''}"
                             f"{' or None' if none_ok else ''}, not {value!r}")

    return check


def names(owner: str, name: str, value: Any) -> None:
    """A check: ``None`` or a non-empty list of non-empty names (e.g. ``target_modules``)."""
    if value is not None and (isinstance(value, str) or not isinstance(value, list | tuple) or not value
                              or not all(isinstance(v, str) and v for v in value)):
        raise ParamError(f"{owner}: {name} must be a non-empty list of names or None, not {value!r}")


def template_choice(owner: str, name: str, value: Any) -> None:
    """A check: ``None``, a prompt template (text) or the number of one of the task's templates (from 0)."""
    if not (value is None or isinstance(value, str) or (_whole_number(value) and value >= 0)):
        raise ParamError(f"{owner}: {name} must be a prompt (e.g. {TEMPLATE_EXAMPLE}), the number of one of the "
                         f"task's templates (0: its main one) or None, not {value!r}")


def word_map(owner: str, name: str, value: Any) -> None:
    """A check: ``None``, a mapping label -> word or a ``"label:word,..."`` string."""
    if value is not None and not isinstance(value, str | Mapping):
        raise ParamError(f"{owner}: {name} must be a mapping label -> word or 'label:word,...', not {value!r}")


def class_weight_param() -> Any:
    """The ``class_weight`` parameter every method with a training loss declares (scikit-learn's meaning)."""
    return param(None, "None: every training example counts the same; 'balanced': each class weighs n / (classes × "
                       "its count), scikit-learn's meaning, for imbalanced samples", one_of(None, "balanced"))


def check_threshold(owner: str, name: str, value: Any) -> None:
    """A check: ``"cv"`` or a probability strictly between 0 and 1."""
    if value == "cv":
        return
    if not (is_number(value) and 0 < value < 1):
        raise ParamError(f"{owner}: {name} must be 'cv' or a probability strictly between 0 and 1, not {value!r}")


def threshold_param(default: Any = "cv") -> Any:
    """The ``threshold`` parameter of a method that can fit multi-label data (several labels per text)."""
    return param(default, "multi-label data: the probability at which a label is predicted, in (0, 1); 'cv': one "
                          "threshold chosen for micro-F1 by cross-validation on the training sample", check_threshold,
                 kind="value")


def param(default: Any, help: str, check: Check | None = None, *, kind: str | None = None) -> Any:
    """Declare one parameter: its default, one line of help, its check and, where the default does not say it,
    how the command line reads it (``kind``: ``"flag"``, ``"list"`` or ``"value"``)."""
    if "\n" in help or not help:
        raise ValueError("a parameter's help is one non-empty line")
    return field(default=default, metadata={"help": help, "check": check, "kind": kind})


@dataclass(frozen=True)
class ParamInfo:
    """What the command line and the docs need to know about one declared parameter."""

    name: str
    default: Any
    help: str
    type: str
    kind: str  # "flag" (a bool), "list" (a sequence) or "value"


@dataclass(kw_only=True)
class MethodConfig:
    """A method's declaration: class-level facts (``ClassVar``) and its parameters (the dataclass fields).

    ``name`` is the registry key (``"dect"``); ``estimator`` the class name in module ``edgetune.methods.<module>``,
    where ``<module>`` is this config's own module name; ``aliases`` maps deprecated spellings to parameter names
    (accepted, with a ``FutureWarning``, for one release)."""

    name: ClassVar[str] = ""
    estimator: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    edge: ClassVar[str] = ""
    needs: ClassVar[str] = ""
    default_model: ClassVar[str | None] = None  # None: edgetune's default model
    budget_rule: ClassVar[str | None] = None
    companions: ClassVar[tuple[str, ...]] = ()
    smoke_params: ClassVar[dict[str, Any]] = {}
    aliases: ClassVar[dict[str, str]] = {}
    #: fits multi-label data (a list of labels per text) as well as single-label data
    multi_label: ClassVar[bool] = False

    text_col: str | None = param(None, "a DataFrame's text column (None: 'text', or its only column)",
                                 text())
    text_b_col: str | None = param(None, "a DataFrame's second text column, for pairs (None: 'text_b' when "
                                         "text_col is None and the frame has one)", text())

    # -- reading the declaration ------------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        """The parameters' fields: the method's own (its family's first), then the input columns every method has."""
        every = [f for f in dataclasses.fields(cls)]
        return [f for f in every if f.name not in INPUT_COLUMNS] + [f for f in every if f.name in INPUT_COLUMNS]

    @classmethod
    def params(cls) -> dict[str, ParamInfo]:
        """Every parameter, in the order of :meth:`fields`."""
        out = {}
        for f in cls.fields():
            default = f.default
            kind = f.metadata.get("kind") or ("flag" if isinstance(default, bool)
                                              else "list" if isinstance(default, tuple | list) else "value")
            out[f.name] = ParamInfo(f.name, default, f.metadata.get("help", ""), str(f.type), kind)
        return out

    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in cls.fields()]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in cls.fields()}

    @classmethod
    def module(cls) -> str:
        """The module that defines the method: ``edgetune.methods.<this config's module name>``."""
        return "edgetune.methods." + cls.__module__.rsplit(".", 1)[-1]

    # -- deprecated spellings -----------------------------------------------------------------------------------
    @classmethod
    def renamed(cls, params: Mapping[str, Any], *, warn: bool = True, where: str = "") -> dict[str, Any]:
        """``params`` with deprecated spellings replaced by today's names (a ``FutureWarning`` for each when
        ``warn``); a parameter given under both names is an error."""
        out = dict(params)
        for old, new in cls.aliases.items():
            if old in out:
                if new in out:
                    raise ParamError(f"{cls.name}: {old!r} is the old name of {new!r}; give only {new!r}")
                if warn:
                    warnings.warn(f"{cls.name}: {old!r} is renamed {new!r}{where}; the old name will be removed in "
                                  "the next release", FutureWarning, stacklevel=4)
                out[new] = out.pop(old)
        return out

    # -- checking -----------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise a one-line :class:`ParamError` for the first value no run can use: each parameter's own check,
        then :meth:`check_together`."""
        owner = self.name or type(self).__name__
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            if check is not None:
                check(owner, f.name, getattr(self, f.name))
        self.check_together()

    def check_together(self) -> None:
        """Checks that read several parameters (a subclass extends it)."""

    def fail(self, message: str) -> ParamError:
        return ParamError(f"{self.name}: {message}")


# -- the families ---------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PromptConfig(MethodConfig):
    """A prompt: template and label words (both default to the task's)."""

    template: str | int | None = param(None, "prompt template, e.g. '{text} It was {mask}', or the number of one "
                                             "of the task's templates (0: its main one; None: the task's)",
                                       template_choice)
    label_words: dict[str, str] | str | None = param(
        None, "one word per label, a mapping or 'label:word,...' (None: the task's)", word_map)


@dataclass(kw_only=True)
class OutputEdgeConfig(PromptConfig):
    """A method on the frozen model's features (label-word scores and a hidden state per prompt)."""

    edge: ClassVar[str] = "output"
    needs: ClassVar[str] = "features"


@dataclass(kw_only=True)
class PrototypeDecoderConfig(OutputEdgeConfig):
    """A prototype decoder trained on the features (DecT, multi-prompt DecT): what the two share."""

    #: whether ``lam=None`` (the reference's 1/shots) is accepted
    lam_none_ok: ClassVar[bool] = True

    proto_dim: int = param(128, "width of the projected space the prototypes live in", whole(1))
    lr: float = param(0.01, "Adam learning rate of the decoder", learning_rate())
    epochs: int | tuple[int, ...] = param((10, 20, 30), "full-batch Adam steps, or candidate lengths chosen with λ by "
                                                        "cross-validation")
    lam: float | str | None = param("cv", "weight λ of the prompt's calibrated scores ('cv': chosen by "
                                          "cross-validation; None: 1/shots)")
    lam_grid: tuple[float, ...] = param((0.25, 0.5, 1.0, 2.0, 4.0), "the λ values 'cv' chooses among, besides "
                                                                     "1/shots")
    cv_folds: int = param(4, "folds of the stratified cross-validation on the training sample", whole(2))
    threads: int | None = param(1, "torch threads while fitting (None: torch's setting)", whole(1, none_ok=True))
    class_weight: str | None = class_weight_param()
    seed: int = param(0, "seed of the initialisation and of the cross-validation folds", seed())

    def check_together(self) -> None:
        super().check_together()
        check_lam(self, none_ok=self.lam_none_ok)
        if not epoch_choices(self.epochs):
            raise self.fail(f"epochs must be a non-negative integer or a non-empty list of them, not {self.epochs!r}")


@dataclass(kw_only=True)
class InputEdgeConfig(PromptConfig):
    """A method that changes what the frozen model reads, trained through an in-process model."""

    edge: ClassVar[str] = "input"
    needs: ClassVar[str] = "weights"

    batch_size: int = param(8, "training examples per step", whole(1))
    eval_every: int = param(20, "steps (or calls) between dev checks", whole(1))
    dev_shots: int | None = param(None, "dev examples per class held out of the training sample (None: as the "
                                        "sample's shots)", whole(1, none_ok=True))
    max_length: int = param(256, "most tokens per prompt", whole(1))
    seed: int = param(0, "seed of the initialisation, the data order and the dev split", seed())
    progress: bool = param(True, "show a progress bar while training")

    def prompt_positions(self) -> int:
        """Positions the method's soft prompt adds before the input (0: none)."""
        return 0


@dataclass(kw_only=True)
class GradientConfig(InputEdgeConfig):
    """An input-edge method trained with AdamW through the frozen model; the trainer reads these fields."""

    steps: int = param(100, "optimizer steps", whole(1))
    grad_accum: int = param(1, "batches accumulated per step", whole(1))
    warmup_ratio: float = param(0.1, "fraction of the steps spent warming the learning rates up",
                                number(0, 1, high_open=True))
    weight_decay: float = param(0.0, "AdamW weight decay", number(0))
    select_by: str = param("loss", "which dev check is kept: 'loss' (lowest dev loss among the accurate ones) or "
                                   "'accuracy'", one_of(*SELECT_BY))
    max_grad_norm: float | None = param(None, "clip the gradients' global norm to this (None: no clipping)",
                                        positive(none_ok=True))
    rollback: float | None = param(0.5, "a dev check that lost more than this fraction of the dev gain rolls back "
                                        "with halved rates (None: off)", number(0, 1, low_open=True, none_ok=True))
    class_weight: str | None = class_weight_param()

    @classmethod
    def learning_rates(cls) -> tuple[str, ...]:
        """Names of the learning-rate parameters (``lr`` and ``lr_*``)."""
        return tuple(k for k in cls.param_names() if k == "lr" or k.startswith("lr_"))


@dataclass(kw_only=True)
class SoftPromptConfig(GradientConfig):
    """A gradient method with a soft prompt whose rate may be ``"auto"`` (a ratio to the embedding scale)."""

    prompt_tokens: int = param(100, "soft-prompt length", whole(0))
    lr_prompt: float | str = param("auto", "AdamW rate of the soft prompt ('auto': prompt_lr_ratio × the "
                                           "embedding scale)", learning_rate(auto=True))
    prompt_init: str = param("text", "how the soft prompt starts: 'text', 'vocab', 'range' or 'zeros'",
                             one_of(*PROMPT_INITS))
    prompt_lr_ratio: float = param(PROMPT_LR_RATIO, "the 'auto' prompt rate as a ratio to the embedding scale",
                                   number(0, MAX_LR, low_open=True))

    def prompt_positions(self) -> int:
        return self.prompt_tokens if isinstance(self.prompt_tokens, int) else 0


@dataclass(kw_only=True)
class FactoredPromptConfig(SoftPromptConfig):
    """A soft prompt built as a product of factors (ACCEPT's codebook mixes, LAMP's U·Q·V), whose ``"auto"`` rates
    come from ``factor_rates``: its prompt step keeps the ratio that rule was measured with."""

    prompt_lr_ratio: float = param(FACTOR_LR_RATIO, "the 'auto' rate's prompt step as a ratio to the embedding "
                                                    "scale, shared among the factors (factor_rates)",
                                   number(0, MAX_LR, low_open=True))


@dataclass(kw_only=True)
class BlackBoxConfig(InputEdgeConfig):
    """An input-edge method searched by CMA-ES with forward passes only; the trainer reads these fields."""

    budget: int = param(8000, "model calls in all (one call: one candidate over the training sample)", whole(1))
    popsize: int = param(20, "CMA-ES population per generation", whole(1))
    sigma: float = param(1.0, "CMA-ES initial step size", positive())
    bound: float = param(0.0, "clip the searched vector to [-bound, bound] when > 0", number(0))
    eval_every: int = param(100, "calls between dev checks of the best candidate", whole(1))

    def check_together(self) -> None:
        super().check_together()
        if self.budget < self.popsize:
            raise self.fail(f"budget ({self.budget} calls) must cover at least one generation of popsize "
                            f"{self.popsize}")


@dataclass(kw_only=True)
class ProjectedConfig(BlackBoxConfig):
    """A black-box method whose candidates are soft prompts made by fixed random projections (BBT, BBTv2)."""

    intrinsic_dim: int = param(500, "dimension of the searched vector z", whole(1))
    prompt_tokens: int = param(50, "soft-prompt length", whole(1))
    projection_scale: float = param(1.0, "scale of the random projection", positive())
    max_rows: int = param(1024, "most prompt rows per forward pass when scoring candidates together (0: one "
                                "candidate per pass)", whole(0))
    max_tokens: int = param(32768, "most tokens (rows × padded length, soft prompt included) per forward pass when "
                                   "scoring candidates together: memory stays bounded on long inputs", whole(1))
    prompt_init: str = param("range", "the start p0: 'range' (tokens 1000, 1001, ...), 'zeros', 'text' or 'vocab'",
                             one_of(*PROMPT_INITS))
    aliases: ClassVar[dict[str, str]] = {"alpha": "projection_scale"}

    def prompt_positions(self) -> int:
        return self.prompt_tokens if isinstance(self.prompt_tokens, int) else 0


def check_lam(config: Any, none_ok: bool = True) -> None:
    """A prototype decoder's ``lam`` (a finite λ ≥ 0 — 0 switches the prompt's scores off —, ``None`` for 1/shots
    where ``none_ok``, or ``"cv"``) and ``lam_grid`` (finite λ values ≥ 0 that ``"cv"`` chooses among)."""
    lam = config.lam
    if not ((isinstance(lam, str) and lam == "cv") or (lam is None and none_ok)
            or (is_number(lam) and math.isfinite(lam) and lam >= 0)):
        raise config.fail(f"lam must be a finite number ≥ 0{', None (1/shots)' if none_ok else ''} or 'cv', "
                          f"not {lam!r}")
    if not isinstance(config.lam_grid, list | tuple) or not all(
            is_number(g) and math.isfinite(g) and g >= 0 for g in config.lam_grid):
        raise config.fail(f"lam_grid must hold finite numbers ≥ 0, not {config.lam_grid!r}")


def epoch_choices(epochs: Any) -> tuple[int, ...]:
    """Candidate training lengths from an ``epochs`` parameter (a count, or a list chosen among by
    cross-validation), sorted; () when it is not a non-negative integer or a non-empty list of them."""
    many = list(epochs) if isinstance(epochs, list | tuple) else [epochs]
    if not many or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in many):
        return ()
    return tuple(sorted(set(many)))
