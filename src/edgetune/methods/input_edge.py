"""Shared machinery of input-edge methods: the few-shot trainer and save/load of trainable weights.

An input-edge method changes what the frozen model *reads* (soft prompts, embedding offsets, or LoRA
as the reference) and trains that with gradients through the frozen model. Each method module supplies
the trainable wrapper (:meth:`InputEdgeMethod.build`) and how a batch becomes label-word scores; this
module does the rest the same way for all of them:

- prompts are rendered and tokenised by the backend (same templates, truncation and label words as DecT);
- the objective is cross-entropy over the label words' logits at the label position (the label word
  after the prompt for causal LMs, the mask for masked LMs, the first decoder step for seq2seq);
- AdamW with one learning rate per parameter group, linear warm-up then linear decay, gradient
  accumulation, a seeded data order, evaluation on a dev split every ``eval_every`` steps and the best
  checkpoint kept; a rich progress bar shows loss and dev accuracy;
- it runs under HF Accelerate, so ``accelerate launch`` spreads the same code over several devices;
- only trainable parameters are saved (safetensors + JSON config), and loading checks the model.
"""

from __future__ import annotations

import copy
import os
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..backends import Backend, load_backend
from ..backends.models import DEFAULT_MODEL
from ..data.example import Dataset, as_examples
from ..data.sampling import sample_k_per_class
from ..data.templates import Template
from ..errors import DataError, EdgetuneError, IncompatibleError
from .base import FORMAT_VERSION, Method, _jsonable, checked_backend, log_softmax, resolve_prompt, restore


class Batch:
    """Padded token ids of a batch of prompts plus where each prompt's label position is."""

    def __init__(self, encoded: Sequence[list[int]], pad_id: int, mask_id: int | None = None) -> None:
        width = max(len(x) for x in encoded)
        self.input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        self.attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            self.input_ids[i, : len(ids)] = torch.tensor(ids)
            self.attention_mask[i, : len(ids)] = 1
        self.last = self.attention_mask.sum(1) - 1
        self.mask_pos = (self.input_ids == mask_id).int().argmax(1) if mask_id is not None else None

    def __len__(self) -> int:
        return len(self.input_ids)


def label_logits(model: Any, kind: str, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 position: torch.Tensor, label_ids: Sequence[int], decoder_prefix: Sequence[int] | None = None
                 ) -> torch.Tensor:
    """Label-word logits (b, C) of ``model`` fed ``inputs_embeds``, read at ``position`` (causal, masked)
    or at the first decoder step (seq2seq). Causal LMs compute only the label words' output rows."""
    rows = torch.arange(len(inputs_embeds), device=inputs_embeds.device)
    if kind == "causal":
        out = model.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        h = out.last_hidden_state[rows, position]
        head = model.get_output_embeddings()
        logits = h @ head.weight[list(label_ids)].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[list(label_ids)]
        cap = getattr(model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits
    if kind == "masked":
        out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        return out.logits[rows, position][:, list(label_ids)]
    dec = torch.tensor([list(decoder_prefix or [0])] * len(inputs_embeds), device=inputs_embeds.device)
    out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, decoder_input_ids=dec)
    return out.logits[:, -1, list(label_ids)]


class PromptedModel(torch.nn.Module):
    """The frozen model plus what an input-edge method learns. ``forward`` embeds the ids, applies
    :meth:`transform` (embedding offsets), prepends :meth:`prompt` (a soft prompt) and returns the
    label-word logits at the label position. ``soft_prompt`` (m, d), when given, is that prompt."""

    def __init__(self, frozen: Any, kind: str, label_ids: Sequence[int], decoder_prefix: Sequence[int] | None,
                 soft_prompt: torch.Tensor | None = None, train_prompt: bool = True):
        super().__init__()
        self.frozen = frozen
        self.kind = kind
        self.label_ids = list(label_ids)
        self.decoder_prefix = decoder_prefix
        self.soft_prompt = None if soft_prompt is None else torch.nn.Parameter(soft_prompt, requires_grad=train_prompt)

    def prompt(self, batch_size: int) -> torch.Tensor | None:
        return None if self.soft_prompt is None else self.soft_prompt[None].expand(batch_size, -1, -1)

    def input_embedding(self) -> torch.nn.Module:
        """The embedding table the prompt's tokens go through (the encoder's, for seq2seq models)."""
        if self.kind == "seq2seq":
            return self.frozen.get_encoder().get_input_embeddings()
        return self.frozen.get_input_embeddings()

    def transform(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return embeds

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings after the method's changes, and the matching attention mask."""
        embeds = self.transform(self.input_embedding()(input_ids), attention_mask)
        prompt = self.prompt(len(input_ids))
        if prompt is not None:
            embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
            ones = torch.ones(len(input_ids), prompt.shape[1], dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        return embeds, attention_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        embeds, mask = self.embed(input_ids, attention_mask)
        shift = embeds.shape[1] - input_ids.shape[1]
        return label_logits(self.frozen, self.kind, embeds, mask, position + shift, self.label_ids,
                            self.decoder_prefix)


def sample_vocab_prompt(embedding: torch.nn.Module, tokens: int, seed: int) -> torch.Tensor:
    """A soft prompt initialised from the embeddings of randomly drawn vocabulary tokens (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    vocab = embedding.weight.shape[0]
    ids = torch.randint(0, vocab, (tokens,), generator=gen)
    with torch.no_grad():
        return embedding(ids.to(embedding.weight.device)).detach().float().cpu().clone()


class InputEdgeMethod(Method):
    """Base of gradient-trained input-side methods (see the module docstring)."""

    edge = "input"

    def __init__(self, model: str | Backend = DEFAULT_MODEL, *, template: str | None = None,
                 label_words: Mapping[str, str] | str | None = None, steps: int = 100, batch_size: int = 8,
                 grad_accum: int = 1, warmup_ratio: float = 0.1, weight_decay: float = 0.0,
                 eval_every: int = 20, dev_shots: int | None = None, max_length: int = 256,
                 seed: int = 0, progress: bool = True) -> None:
        self.model = model
        self.template = template
        self.label_words = label_words
        self.steps = steps
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.warmup_ratio = warmup_ratio
        self.weight_decay = weight_decay
        self.eval_every = eval_every
        self.dev_shots = dev_shots
        self.max_length = max_length
        self.seed = seed
        self.progress = progress
        self._backend: Backend | None = None if isinstance(model, str) else model

    # -- to implement -----------------------------------------------------------------------------------
    @abstractmethod
    def build(self, model: Any, tokenizer: Any, kind: str) -> torch.nn.Module:
        """Create the trainable module around the frozen ``model`` (sets ``self.module_``)."""

    @abstractmethod
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups, each with its own ``lr``."""

    def scores(self, batch: Batch) -> torch.Tensor:
        """Label-word logits (b, C) for a batch, with gradients."""
        device = next(self.module_.parameters()).device
        return self.module_(batch.input_ids.to(device), batch.attention_mask.to(device),
                            self._position(batch).to(device))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.module_.state_dict().items() if k in self._trainable_names()}

    def _trainable_names(self) -> set[str]:
        return {n for n, p in self.module_.named_parameters() if p.requires_grad}

    @property
    def trainable_params_(self) -> int:
        return int(sum(p.numel() for p in self.module_.parameters() if p.requires_grad))

    # -- backend and data -------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = load_backend(str(self.model), cache=None, progress=self.progress)
        return checked_backend(self, self._backend)

    def _setup(self) -> None:
        model, tokenizer = self.backend.torch_model()
        self.kind_ = self.backend.kind
        self.frozen_, self.tokenizer_ = model, tokenizer
        for p in model.parameters():
            p.requires_grad_(False)
        self.label_ids_ = self.backend.check_label_words(self.words_)
        self.backend.check_template(self.template_)
        self.pad_id_ = self.backend.pad_id
        self.mask_id_ = getattr(self.backend, "_mask_id", None) if self.kind_ == "masked" else None
        prefix = None
        if self.kind_ == "seq2seq":
            start = model.config.decoder_start_token_id
            prefix = [self.pad_id_ if start is None else start]
            if getattr(self.backend, "_sentinel", None):
                prefix.append(self.backend._mask_id)
        self.decoder_prefix_ = prefix
        # on the frozen model's device (the backend put it there: a GPU when there is one)
        self.module_ = self.build(model, tokenizer, self.kind_).to(next(model.parameters()).device)

    def encode(self, X: Any) -> list[list[int]]:
        examples = as_examples([X] if isinstance(X, str) else X)
        old = getattr(self.backend, "max_length", None)
        if old is not None:
            self.backend.max_length = min(old, self.max_length)
        try:
            return [self.backend._encode(self.template_.render(ex))[0] for ex in examples]
        finally:
            if old is not None:
                self.backend.max_length = old

    def _batch(self, encoded: Sequence[list[int]]) -> Batch:
        return Batch(encoded, self.pad_id_, self.mask_id_)

    def _position(self, batch: Batch, prefix_len: int = 0) -> torch.Tensor:
        pos = batch.mask_pos if self.kind_ == "masked" else batch.last
        return pos + prefix_len

    def _prompting(self, X: Any) -> tuple[Template, dict[str, str], tuple[str, ...]]:
        return resolve_prompt(X, self.template, self.label_words)

    def _dev_split(self, X: Any) -> Dataset | None:
        """k per class from the task's train pool, disjoint from the training sample (seeded)."""
        task = getattr(X, "task", None)
        if task is None or not isinstance(X, Dataset):
            return None
        pool = task.load("train")
        used = {e.id for e in X}
        rest = Dataset(tuple(e for e in pool if e.id not in used), pool.labels, name=pool.name, task=task)
        shots = self.dev_shots or X.shots or max(1, len(X) // max(1, len(X.labels)))
        try:
            return sample_k_per_class(rest, shots, self.seed + 10_000)
        except DataError:
            return None

    # -- scikit-learn surface ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str] | None = None, dev: Any = None) -> InputEdgeMethod:
        """Train on a task sample (dev split drawn from the task's pool) or on texts + labels."""
        template, words, labels = self._prompting(X)
        examples = as_examples(X, y)
        if any(e.label is None for e in examples):
            raise DataError("every training example needs a label (pass y=)")
        unknown = sorted({e.label for e in examples if e.label not in labels})
        if unknown:
            raise DataError(f"unknown label(s) {unknown}; the labels are {list(labels)}")
        self.labels_, self.template_ = labels, template
        self.words_ = [words[lab] for lab in labels]
        torch.manual_seed(self.seed)
        self._setup()
        self.identity_, self.model_name_ = self.backend.identity, self.backend.name
        index = {lab: i for i, lab in enumerate(labels)}
        train_ids = self.encode(examples)
        y_train = torch.tensor([index[e.label] for e in examples])
        dev = self._dev_split(X) if dev is None else dev
        dev_ids = dev_y = None
        if dev is not None and len(dev):
            dev_ex = as_examples(dev)
            dev_ids, dev_y = self.encode(dev_ex), np.array([index[e.label] for e in dev_ex])
        self.dev_size_ = 0 if dev_ids is None else len(dev_ids)
        self.history_ = self._train(train_ids, y_train, dev_ids, dev_y)
        return self

    def _train(self, ids: list[list[int]], y: torch.Tensor, dev_ids, dev_y) -> dict[str, Any]:
        from accelerate import Accelerator
        from transformers import get_linear_schedule_with_warmup

        accelerator = Accelerator(gradient_accumulation_steps=self.grad_accum, cpu=not torch.cuda.is_available())
        optimizer = torch.optim.AdamW(self.param_groups(), weight_decay=self.weight_decay)
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.warmup_ratio * self.steps), self.steps)
        self.module_, optimizer, schedule = accelerator.prepare(self.module_, optimizer, schedule)
        gen = torch.Generator().manual_seed(self.seed)
        order: list[int] = []
        best = (-1.0, 0, None)
        history: dict[str, Any] = {"loss": [], "dev_accuracy": [], "steps": self.steps}
        start = time.perf_counter()
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[info]}"), transient=True, disable=not self.progress)
        with bar:
            job = bar.add_task(f"training {self.name}", total=self.steps, info="")
            for step in range(1, self.steps + 1):
                self.module_.train()
                for _ in range(self.grad_accum):
                    if len(order) < self.batch_size:
                        order += torch.randperm(len(ids), generator=gen).tolist()
                    pick, order = order[: self.batch_size], order[self.batch_size :]
                    # under `accelerate launch`, each process takes its share of the global batch
                    pick = pick[accelerator.process_index :: accelerator.num_processes] or pick
                    with accelerator.accumulate(self.module_):
                        logits = self.scores(self._batch([ids[i] for i in pick]))
                        loss = F.cross_entropy(logits, y[pick].to(logits.device)) / self.grad_accum
                        accelerator.backward(loss)
                history["loss"].append(float(loss.detach()) * self.grad_accum)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                info = f"loss {history['loss'][-1]:.3f}"
                if dev_ids is not None and (step % self.eval_every == 0 or step == self.steps):
                    acc = float((self._predict_ids(dev_ids).argmax(1) == dev_y).mean())
                    history["dev_accuracy"].append((step, acc))
                    if acc > best[0]:
                        best = (acc, step, copy.deepcopy({k: v.detach().cpu() for k, v in
                                                          self.trainable_state().items()}))
                    info += f" · dev acc {acc:.3f} (best {best[0]:.3f} @ {best[1]})"
                bar.update(job, advance=1, info=info)
        self.module_ = accelerator.unwrap_model(self.module_)
        if best[2] is not None:
            self.module_.load_state_dict(best[2], strict=False)
            history["best_step"], history["best_dev_accuracy"] = best[1], best[0]
        history["seconds"] = time.perf_counter() - start
        self.module_.eval()
        return history

    @torch.no_grad()
    def _predict_ids(self, ids: list[list[int]], batch_size: int = 32) -> np.ndarray:
        self.module_.eval()
        out = []
        for b in range(0, len(ids), batch_size):
            out.append(self.scores(self._batch(ids[b : b + batch_size])).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels_)), np.float32)

    def decision_function(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return self._predict_ids(self.encode(X))

    def predict(self, X: Any) -> list[str]:
        return [self.labels_[i] for i in self.decision_function(X).argmax(1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.exp(log_softmax(self.decision_function(X)))

    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise EdgetuneError(f"this {self.name} is not fitted yet: call fit() first")

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        from .base import write_atomically

        self._check_fitted()
        params = {k: v for k, v in self.get_params().items() if k != "progress"}
        config = {"format": FORMAT_VERSION, "method": self.name, "edge": self.edge, "params": _jsonable(params),
                  "labels": list(self.labels_), "template": self.template_.text, "label_words": list(self.words_),
                  "model": self.model_name_, "model_identity": self.identity_, "backend_kind": self.kind_,
                  "trainable_params": self.trainable_params_}
        state = {k: v.detach().cpu().float().numpy() for k, v in self.trainable_state().items()}
        return write_atomically(path, config, state)

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> InputEdgeMethod:
        obj, _, tensors = restore(cls, path, model)
        obj._setup()
        state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
        missing = obj._trainable_names() - set(state)
        if missing:
            raise IncompatibleError(f"{str(path)!r} lacks trained weights {sorted(missing)[:3]}")
        try:
            obj.module_.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise IncompatibleError(f"{str(path)!r} does not fit this model: {str(exc).splitlines()[0]}") from None
        obj.module_.eval()
        return obj
