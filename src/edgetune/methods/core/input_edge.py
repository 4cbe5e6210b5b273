"""What input-edge methods share: a prompted model around the frozen one, trained by a trainer.

An input-edge method changes what the frozen model *reads* (soft prompts, embedding offsets; LoRA as the
reference) and is trained through the frozen model: with gradients (:class:`GradientMethod`, driven by
:class:`~edgetune.methods.core.trainers.AdamWTrainer`) or with forward passes only (:class:`BlackBoxMethod`,
driven by :class:`~edgetune.methods.core.trainers.CMAESTrainer`). A method module supplies the prompted model
(:meth:`InputEdgeMethod.build`) and, for gradient methods, its parameter groups; this module does the rest
the same way for all of them:

- prompts are rendered and tokenised by the backend (:meth:`Backend.prompt_ids`, same templates,
  truncation and label words as DecT) and padded by it (:meth:`Backend.collate`);
- the objective is cross-entropy over the label words' logits read by the backend's
  :class:`~edgetune.backends.local.LabelReader` (the forward pass feature extraction uses);
- a dev split of k per class (fewer, still balanced, when a class runs short) is drawn from the task's train
  pool, disjoint from the training sample, and the checkpoint ``select_by`` picks among its checks is kept;
- only trainable parameters are saved (safetensors + JSON config), and loading checks the model.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ...backends import Backend, load_backend
from ...data.example import Dataset, Example
from ...data.sampling import sample_k_per_class
from ...errors import DataError, EdgetuneError, IncompatibleError
from .config import BlackBoxConfig, GradientConfig, InputEdgeConfig, ParamError, ProjectedConfig
from .estimator import Costs, Method
from .persistence import check_shapes, restore, write_atomically
from .prompted import embed_ids, embedding_scale, factor_rates, sample_vocab_prompt, text_prompt_ids
from .trainers import AdamWTrainer, CMAESTrainer

PROMPT_INITS = ("vocab", "text", "range", "zeros")
SELECT_BY = ("loss", "accuracy")  # which dev checkpoint a gradient method keeps (see AdamWTrainer)


class InputEdgeMethod(Method):
    """Base of input-side methods (see the module docstring).

    Learned attributes (besides ``labels_``): ``template_``, ``words_`` and ``label_ids_`` (the prompt and
    the label words' token ids), ``module_`` (the prompted model, with the trained weights), ``history_``
    (loss and dev curves, the chosen step or call, seconds), ``dev_size_`` (dev examples used to choose the
    checkpoint; 0 without a dev split), ``n_train_``.
    """

    config = InputEdgeConfig

    trainer: ClassVar[str]  # "adamw" or "cmaes": which trainer drives it
    fitted_attribute = "module_"

    # -- to implement -----------------------------------------------------------------------------------
    @abstractmethod
    def build(self, model: Any, embedding: torch.nn.Module) -> torch.nn.Module:
        """The prompted model around the frozen ``model`` (``embedding``: its input-embedding table)."""

    @abstractmethod
    def _train(self, ids: list[list[int]], y: torch.Tensor) -> dict[str, Any]:
        """Train ``self.module_`` on encoded prompts; return the history."""

    def _trainable_names(self) -> set[str]:
        return {n for n, p in self.module_.named_parameters() if p.requires_grad}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = self._trainable_names()
        return {k: v for k, v in self.module_.state_dict().items() if k in names}

    # -- backend and data -------------------------------------------------------------------------------
    def _load_backend(self) -> Backend:
        return load_backend(self.model_name, cache=None, progress=self.progress)

    def _setup(self) -> None:
        """The frozen model, the label reader and the prompted model, on the frozen model's device."""
        backend = self.backend
        model, tokenizer = backend.torch_model()
        self.kind_ = backend.kind
        self.frozen_, self.tokenizer_ = model, tokenizer
        for p in model.parameters():
            p.requires_grad_(False)
        backend.check_template(self.template_)
        self.label_ids_ = backend.check_label_words(self.words_)
        self.reader_ = backend.label_reader(self.label_ids_)
        embedding = backend.input_embedding(model)
        self.embedding_scale_ = embedding_scale(embedding)
        tokens = self.settings().prompt_positions()
        window = min(self.max_length, backend.window)
        if tokens + 8 > window:
            raise ParamError(f"{self.name}: prompt_tokens={tokens} leaves no room for the input in a window of "
                             f"{window} tokens; lower prompt_tokens")
        self.module_ = self.build(model, embedding).to(next(model.parameters()).device)

    def initial_prompt(self, embedding: torch.nn.Module, tokens: int, how: str) -> torch.Tensor:
        """A (tokens, d) soft prompt to start from: ``"vocab"`` random vocabulary embeddings (PEFT's
        SAMPLE_VOCAB), ``"text"`` the embeddings of the task's own words (the template without its inputs,
        then the label words; repeated to length, as the references' TEXT initialisation), ``"range"`` the
        vocabulary ids 1000, 1001, ... (BBT's reference prompt p0), ``"zeros"`` zero vectors."""
        if how == "vocab":
            return sample_vocab_prompt(embedding, tokens, self.seed)
        if how == "zeros":
            return torch.zeros(tokens, embedding.weight.shape[1])
        if how == "range":
            vocab = embedding.weight.shape[0]
            return embed_ids(embedding, [(1000 + i) % vocab for i in range(tokens)])
        if how == "text":
            ids = self.tokenizer_(self.init_text(), add_special_tokens=False)["input_ids"]
            return embed_ids(embedding, text_prompt_ids(ids, tokens))
        raise ParamError(f"{self.name}: prompt_init must be one of {', '.join(PROMPT_INITS)}, not {how!r}")

    def init_text(self) -> str:
        """The task's own words: the template with its inputs emptied, then every label word."""
        empty = Example(text="", text_b="", extra={f: "" for f in self.template_.fields})
        prompt = self.template_.render(empty)
        return " ".join((prompt.text_before + " " + prompt.text_after).split() + list(self.words_))

    def encode(self, X: Any) -> list[list[int]]:
        """Token ids of each input's prompt, within ``max_length``."""
        examples = self.examples(X)
        return [self.backend.prompt_ids(self.template_.render(ex), self.max_length) for ex in examples]

    def scores(self, ids: Sequence[list[int]]) -> torch.Tensor:
        """Label-word logits (b, C) of encoded prompts (with gradients when enabled)."""
        device = next(self.module_.parameters()).device
        batch = self.backend.collate(ids).to(device)
        return self.module_(batch.input_ids, batch.attention_mask, batch.position)

    @torch.no_grad()
    def _predict_ids(self, ids: list[list[int]], batch_size: int = 32) -> np.ndarray:
        """Label-word logits of encoded prompts, batched by length (a batch is padded to its longest row,
        so batching rows of similar length halves the work on mixed-length data); rows come back in
        the order given."""
        self.module_.eval()
        if not ids:
            return np.zeros((0, len(self.labels_)), np.float32)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), len(self.labels_)), np.float32)
        for b in range(0, len(ids), batch_size):
            rows = order[b : b + batch_size]
            out[rows] = self.scores([ids[i] for i in rows]).float().cpu().numpy()
        return out

    def dev_scores(self) -> tuple[float, float] | None:
        """(accuracy, mean cross-entropy) of the current module on the dev split (``None`` without one)."""
        if self._dev is None:
            return None
        ids, y = self._dev
        logits = torch.from_numpy(self._predict_ids(ids)).double()
        target = torch.as_tensor(y, dtype=torch.long)
        loss = float(torch.nn.functional.cross_entropy(logits, target))
        return float((logits.argmax(1) == target).double().mean()), loss

    def dev_accuracy(self) -> float | None:
        """Accuracy of the current module on the dev split (``None`` without one)."""
        scores = self.dev_scores()
        return None if scores is None else scores[0]

    def dev_split(self, X: Any) -> Dataset | None:
        """The dev split :meth:`fit` draws for a task sample ``X``: k per class from the task's train pool,
        disjoint from ``X`` and from the validation examples ``X.reserved`` names (seeded by ``seed``; k =
        ``dev_shots``, else the sample's shots). When some class has fewer than k left, every class gets as many as
        that class has left, so the split stays balanced (trec at 64 shots: its rarest class has 22 left, so 22
        per class); without a split, training keeps its last step. ``None`` for plain texts, a multi-label sample,
        or a class with nothing left."""
        task = getattr(X, "task", None)
        if task is None or not isinstance(X, Dataset) or X.multi_label:
            return None
        pool = task.load("train")
        rest = pool.excluding(X, [e for e in pool.examples if e.id in X.reserved])
        shots = self.dev_shots or X.shots or max(1, len(X) // max(1, len(X.labels)))
        left = Counter(ex.label for ex in rest.examples)
        shots = min([shots, *(left.get(lab, 0) for lab in rest.labels)])
        if shots < 1:
            return None
        try:
            return sample_k_per_class(rest, shots, self.seed + 10_000)
        except DataError:
            return None

    # -- scikit-learn surface ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str] | None = None, dev: Any = None) -> InputEdgeMethod:
        """Train on a task sample (dev split drawn from the task's pool) or on texts + labels (``dev``:
        labelled examples to pick the checkpoint on; none by default)."""
        self._validate_params()
        template, words, labels = self._prompting(X, y)
        examples, y_idx = self._labelled(X, y, labels)
        self.labels_, self.template_ = labels, template
        self.words_ = [words[lab] for lab in labels]
        torch.manual_seed(self.seed)
        self._setup()
        self.identity_, self.model_name_ = self.backend.identity, self.backend.name
        train_ids = self.encode(examples)
        dev = self.dev_split(X) if dev is None else dev
        self._dev = None
        if dev is not None and len(dev):
            dev_ex, dev_y = self._labelled(dev, None, labels)
            self._dev = (self.encode(dev_ex), dev_y)
        self.dev_size_ = 0 if self._dev is None else len(self._dev[0])
        self.n_train_ = len(train_ids)
        self.history_ = self._train(train_ids, torch.from_numpy(y_idx))
        return self

    def class_scores(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return self._predict_ids(self.encode(X))

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        config = {**self._base_config(), "template": self.template_.text, "label_words": list(self.words_),
                  "backend_kind": self.kind_, "trainable_params": self.trainable_params_}
        state = {k: (v if not v.is_floating_point() else v.float()).detach().cpu().numpy()
                 for k, v in self.trainable_state().items()}
        return write_atomically(path, config, state)

    @property
    def trainable_params_(self) -> int:
        """Numbers training changes: parameters with gradients (a black-box method: its search vector)."""
        self._check_fitted()
        return int(sum(p.numel() for p in self.module_.parameters() if p.requires_grad))

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> InputEdgeMethod:
        """Load a saved method onto its model. Before the model is loaded or anything is built, the saved
        parameters that set the trained tensors' sizes are checked against the saved arrays (:meth:`saved_shapes`),
        so an edited config cannot make the prompted model allocate more than the saved weights hold."""
        obj, _, tensors = restore(cls, path, model)
        try:
            expected = obj.saved_shapes(tensors)
        except IncompatibleError as exc:
            raise IncompatibleError(f"{str(path)!r}: {exc}") from None
        except EdgetuneError as exc:  # a ParamError or budget error from the saved parameters and shapes
            raise IncompatibleError(f"{str(path)!r}: its saved parameters do not fit its weights ({exc}); save or "
                                    "train the model again") from None
        check_shapes(path, tensors, expected, "from its saved parameters")
        obj._setup()
        state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
        try:
            obj._before_load(state)
        except IncompatibleError as exc:
            raise IncompatibleError(f"{str(path)!r}: {exc}") from None
        missing = obj._trainable_names() - set(state)
        if missing:
            raise IncompatibleError(f"{str(path)!r} lacks trained weights {sorted(missing)[:3]}")
        try:
            obj.module_.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise IncompatibleError(f"{str(path)!r} does not fit this model: {str(exc).splitlines()[0]}") from None
        obj._after_load()
        obj.module_.eval()
        return obj

    def saved_shapes(self, tensors: dict[str, np.ndarray]) -> dict[str, tuple[int | None, ...]]:
        """The shape each saved array must have given the loaded parameters (``None``: any size on that axis),
        worked out from the parameters and the saved arrays alone — no model is loaded yet: sizes the model decides
        (the hidden size d) are read from the arrays, sizes the parameters decide (prompt length, rank, ...) must
        match. A method whose parameters set the size of what it builds overrides this."""
        return {}

    @staticmethod
    def saved_axis(tensors: dict[str, np.ndarray], name: str, axis: int) -> int:
        """The size of a saved array's axis (an :class:`IncompatibleError` when the array is missing or lacks it)."""
        if name not in tensors:
            raise IncompatibleError(f"it lacks the saved array {name!r}; it is not a complete model of this method")
        shape = np.shape(tensors[name])
        if len(shape) <= axis:
            raise IncompatibleError(f"saved array {name!r} has shape {tuple(shape)}, with no axis {axis}")
        return int(shape[axis])

    def _before_load(self, state: dict[str, torch.Tensor]) -> None:
        """Shape ``module_`` from saved tensors before they are loaded (methods whose structure training
        decides, e.g. which weights SIFT trains)."""

    def _after_load(self) -> None:
        """Restore derived state from the loaded weights."""


class GradientMethod(InputEdgeMethod):
    """An input-edge method trained with gradients through the frozen model (AdamW).

    A soft prompt's learning rate ``lr_prompt`` may be ``"auto"`` (:class:`SoftPromptConfig`): the rate is then
    ``prompt_lr_ratio × embedding_scale_``, the standard deviation of the backbone's input-embedding elements.
    An AdamW step moves each element by about the learning rate, so a rate tuned on one backbone (0.3 on T5,
    whose embeddings are large) is far too large on another (SmolLM2's elements have std 0.136); a ratio to the
    embedding scale carries over.
    A number is used as given (the papers' values stay reachable, e.g. ``lr_prompt=0.3``).

    ``max_grad_norm`` clips the gradients' global norm before each step (``None``, the default: no clipping,
    as the ADePT/DePT papers train; 1.0 is HF Trainer's default). (Why this default:
    benchmarks/results/README.md, "Where the defaults come from".)

    ``rollback`` guards against that collapse: a dev check that has lost more than this fraction of the dev
    accuracy the best check so far gained over the start sends training back to that check with every learning
    rate halved and AdamW's moments cleared (at most three times; ``None``: off, as the papers train). The
    rollbacks are listed in ``history_["rollbacks"]`` as (step, restored step).
    """

    config = GradientConfig

    trainer = "adamw"
    #: called after each dev check with (step, {"dev_accuracy", "dev_loss"}), the weights just checked in place
    #: (e.g. to score them on another split); set it on an instance before ``fit``
    on_check: Callable[[int, dict[str, Any]], None] | None = None

    @abstractmethod
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups, each with its own ``lr``."""

    def lr_params(self) -> tuple[str, ...]:
        """Names of the learning-rate parameters."""
        return self.config.learning_rates()

    def learning_rate(self, name: str) -> float:
        """The learning rate in use for parameter ``name`` ("auto" resolved against the embedding scale)."""
        value = getattr(self, name)
        return self.prompt_lr_ratio * self.embedding_scale_ if value == "auto" else float(value)

    def factor_learning_rates(self, name: str, build: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                              factors: dict[str, torch.Tensor]) -> dict[str, float]:
        """The rate of each factor of a prompt trained as a product (``build(factors)`` is the prompt): with
        ``name`` = "auto", rates that move the prompt as prompt tuning's step moves its prompt (:func:`factor_rates`);
        a number: that rate for every factor. Kept in ``factor_lr_`` (reported in ``history_["lr"]``)."""
        step = self.learning_rate(name)
        self.factor_lr_ = (factor_rates(build, factors, step) if getattr(self, name) == "auto"
                           else dict.fromkeys(factors, step))
        return self.factor_lr_

    def offset_ratio(self, ids: list[list[int]]) -> float | None:
        """Mean ‖offset‖ / ‖embedding‖ over the training tokens, for methods that offset embeddings."""
        return None

    def param_parts(self) -> dict[str, int] | None:
        """Trainable parameters by part, for a method whose budget counts only some of them (APT's prefix, not its
        gates); recorded in the history and shown beside the total in bench reports."""
        return None

    def _train(self, ids: list[list[int]], y: torch.Tensor) -> dict[str, Any]:
        trainer = AdamWTrainer(self.settings(), description=f"training {self.name}", on_check=self.on_check)
        history = trainer.train(self, self.param_groups(), ids, y)
        history["lr"] = {**{name: self.learning_rate(name) for name in self.lr_params()},
                         **getattr(self, "factor_lr_", {})}  # a factorised prompt's per-factor rates
        history["embedding_scale"] = self.embedding_scale_
        ratio = self.offset_ratio(ids)
        if ratio is not None:
            history["offset_ratio"] = ratio
        parts = self.param_parts()
        if parts is not None:
            history["param_parts"] = parts
        return history

    def costs(self) -> Costs:
        self._check_fitted()
        h = getattr(self, "history_", {})
        dev = len(h.get("dev_accuracy", [])) * getattr(self, "dev_size_", 0)
        return Costs(trainable_params=self.trainable_params_,
                     queries=int(self.steps * self.batch_size * self.grad_accum + dev), steps=int(self.steps))


class BlackBoxMethod(InputEdgeMethod):
    """An input-edge method searched with forward passes only (CMA-ES over a low-dimensional vector).

    One *call* = one candidate evaluated on the whole k-shot training set; ``budget`` calls in all.
    Model *queries* (forward passes over single samples) are ``calls x len(train)`` plus the dev checks.
    """

    config = BlackBoxConfig

    trainer = "cmaes"

    @property
    @abstractmethod
    def search_dim(self) -> int:
        """Dimension of the searched vector."""

    @property
    def search_blocks(self) -> int:
        """Blocks of the vector searched one after another (1: one CMA-ES over all of it)."""
        return 1

    @abstractmethod
    def set_candidate(self, z: np.ndarray) -> None:
        """Make the prompted model use candidate ``z``."""

    @abstractmethod
    def losses(self, zs: list[np.ndarray]) -> list[tuple[float, float]]:
        """(mean cross-entropy, accuracy) of each candidate on the training set."""

    def dev_accuracy_of(self, z: np.ndarray) -> float | None:
        if self._dev is None:
            return None
        self.set_candidate(z)
        return self.dev_accuracy()

    def _trainable_names(self) -> set[str]:
        return {"soft_prompt"}

    @property
    def trainable_params_(self) -> int:
        return self.search_dim

    def _train(self, ids: list[list[int]], y: torch.Tensor) -> dict[str, Any]:
        self.module_.eval()
        self._prepare_search(ids, y)
        trainer = CMAESTrainer(self.settings(), dim=self.search_dim, description=f"{self.display_name} (CMA-ES) calls",
                               blocks=self.search_blocks)
        z, history = trainer.train(self)
        self.set_candidate(z)
        self.z_ = z
        self.calls_ = history["calls"]
        history.update(train_queries=self.calls_ * len(ids),
                       dev_queries=len(history["dev_accuracy"]) * self.dev_size_)
        return history

    def _prepare_search(self, ids: list[list[int]], y: torch.Tensor) -> None:
        """Pre-batch the training set before the search starts."""

    def costs(self) -> Costs:
        self._check_fitted()
        h = self.history_
        return Costs(trainable_params=self.trainable_params_, queries=int(h["train_queries"] + h.get("dev_queries", 0)),
                     steps=int(h["calls"]))


class ProjectedSearch(BlackBoxMethod):
    """A black-box method whose candidates are soft prompts made from a vector z by fixed random projections
    (BBT, BBTv2): what they share — the projection settings, the length-sorted training batches, and scoring a
    generation's candidates together. A subclass says what its prompted model reads for p candidates
    (:meth:`candidate_prompts`, set as ``module_.row_prompts``: candidate j is followed by the j-th share of the
    rows).

    ``max_rows``: most prompt rows per forward pass when scoring candidates together: up to
    ``max_rows // len(batch)`` candidates share one pass (the reference's ``--parallel``); 0 scores one
    candidate per pass. Same arithmetic, far fewer passes. ``max_tokens`` bounds the same pass by tokens (rows ×
    (padded length + soft prompt)), so memory does not grow with the inputs' length (rte's long pairs at 1,024
    rows held 10.5 GB)."""

    config = ProjectedConfig

    @abstractmethod
    def candidate_prompts(self, zs: list[np.ndarray]) -> torch.Tensor:
        """What the prompted model reads for each candidate, stacked: (p, ...)."""

    def _prepare_search(self, ids: list[list[int]], y: torch.Tensor) -> None:
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # length-sorted: little padding
        step = max(1, self.batch_size * 4)
        self._batches = [(self.backend.collate([ids[i] for i in order[b:b + step]]), y[order[b:b + step]])
                         for b in range(0, len(order), step)]

    @torch.inference_mode()
    def losses(self, zs: list[np.ndarray]) -> list[tuple[float, float]]:
        """(mean cross-entropy, accuracy) of every candidate on the training set, several per forward pass."""
        module = self.module_
        device = next(module.parameters()).device
        prompts = self.candidate_prompts(zs)
        total = torch.zeros(len(zs), dtype=torch.float64)
        correct = torch.zeros(len(zs), dtype=torch.long)
        n = 0
        prompt_len = self.settings().prompt_positions()
        try:
            for batch, y in self._batches:
                rows = len(batch)
                width = batch.input_ids.shape[1] + prompt_len
                chunk = max(1, min(self.max_rows // rows, self.max_tokens // (rows * width))) if self.max_rows else 1
                b = batch.to(device)
                y = y.to(device)
                for c in range(0, len(zs), chunk):
                    group = prompts[c : c + chunk].to(device)
                    module.row_prompts = group
                    logits = module(b.input_ids.repeat(len(group), 1), b.attention_mask.repeat(len(group), 1),
                                    b.position.repeat(len(group)))
                    yy = y.repeat(len(group))
                    ce = F.cross_entropy(logits.float(), yy, reduction="none").view(len(group), rows)
                    total[c : c + len(group)] += ce.sum(1).double().cpu()
                    correct[c : c + len(group)] += (logits.argmax(1) == yy).view(len(group), rows).sum(1).cpu()
                n += rows
        finally:
            module.row_prompts = None
        return [(float(t) / n, int(k) / n) for t, k in zip(total, correct, strict=True)]

