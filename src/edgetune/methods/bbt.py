"""Black-Box Tuning (BBT; Sun et al., ICML 2022): derivative-free soft-prompt search with CMA-ES.

The input-side black-box method DecT is compared with. A vector z of ``intrinsic_dim`` numbers is
mapped by a fixed random matrix A (``n_prompt_tokens * d x intrinsic_dim``, normal with std
``alpha * std(word embeddings) / (sqrt(intrinsic_dim) * sigma)``, as in the reference
txsun1997/Black-Box-Tuning) to a soft prompt ``A z`` prepended to the input embeddings of the frozen
model. CMA-ES (the ``cma`` package; start z = 0, step size ``sigma``, population ``popsize``) minimises
the cross-entropy over the label words on the k-shot training set, with forward passes only.

**Budget, counted the way the BBT paper counts it:** one *call* = one candidate prompt evaluated on the
whole k-shot training set; ``budget`` calls in all (default 8,000 = 400 generations of 20). Model
*queries* (forward passes over single samples) are ``calls x len(train)``, plus the dev evaluations
(every ``eval_every`` calls the current best candidate is scored on the dev split and the prompt with
the best dev accuracy is kept, as the reference does). Both are reported in :attr:`history_`.

Differences from the reference: the prompt is prepended to every input (the reference's GPT-2 path
also prepends; for RoBERTa it fills placeholder tokens). A generation's candidates share forward passes
(``max_rows``), as the reference's ``--parallel`` does; that changes nothing but the speed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..backends import Backend
from ..backends.models import DEFAULT_MODEL
from .base import register
from .input_edge import InputEdgeMethod, PromptedModel


class BBTModule(PromptedModel):
    """The frozen model with a fixed (not gradient-trained) soft prompt that the search overwrites.
    While ``row_prompts`` (one prompt per input row) is set, it replaces the shared prompt: that is how
    a whole population of candidates is scored in one forward pass."""

    row_prompts: torch.Tensor | None = None

    def set_prompt(self, prompt: torch.Tensor) -> None:
        with torch.no_grad():
            self.soft_prompt.copy_(prompt)

    def prompt(self, batch_size: int) -> torch.Tensor | None:
        if self.row_prompts is not None:
            return self.row_prompts
        return super().prompt(batch_size)


@register
class BBT(InputEdgeMethod):
    """CMA-ES over a random low-dimensional projection of a soft prompt (see the module docstring).

    Args:
        intrinsic_dim: dimension of the searched vector z (reference: 500).
        prompt_tokens: soft-prompt length (reference: 50).
        popsize: CMA-ES population per generation (reference: 20).
        budget: model calls in all, one call = one candidate over the k-shot set (reference: 8,000).
        sigma: CMA-ES initial step size (reference: 1).
        alpha: scale of the random projection (reference: 1).
        bound: clip z to [-bound, bound] when > 0 (reference: 0, no bound).
        eval_every: calls between dev evaluations of the current best candidate (reference: 100).
        max_rows: most prompt rows per forward pass when scoring candidates together: up to
            ``max_rows // len(batch)`` candidates share one pass (the reference's ``--parallel``). Same
            arithmetic as one candidate at a time, far fewer passes: on a GPU, where a small model is bound
            by kernel launches, this is what makes the 8,000-call budget affordable. 0 scores one candidate
            per pass.
    """

    name = "bbt"

    def __init__(self, model: str | Backend = DEFAULT_MODEL, *, intrinsic_dim: int = 500, prompt_tokens: int = 50,
                 popsize: int = 20, budget: int = 8000, sigma: float = 1.0, alpha: float = 1.0, bound: float = 0.0,
                 eval_every: int = 100, max_rows: int = 1024, **kwargs: Any) -> None:
        kwargs.setdefault("steps", 0)
        super().__init__(model, eval_every=eval_every, **kwargs)
        if budget < popsize:
            raise ValueError(f"budget ({budget} calls) must cover at least one generation of {popsize}")
        self.intrinsic_dim = intrinsic_dim
        self.prompt_tokens = prompt_tokens
        self.popsize = popsize
        self.budget = budget
        self.sigma = sigma
        self.alpha = alpha
        self.bound = bound
        self.max_rows = max_rows

    def build(self, model: Any, tokenizer: Any, kind: str) -> torch.nn.Module:
        embedding = model.get_encoder().get_input_embeddings() if kind == "seq2seq" else model.get_input_embeddings()
        table = embedding.weight.detach().float()
        dim = table.shape[1]
        std = self.alpha * float(table.std()) / (np.sqrt(self.intrinsic_dim) * self.sigma)
        gen = torch.Generator().manual_seed(self.seed)
        self.projection_ = torch.randn(self.prompt_tokens * dim, self.intrinsic_dim, generator=gen) * std
        module = BBTModule(model, kind, self.label_ids_, self.decoder_prefix_,
                           soft_prompt=torch.zeros(self.prompt_tokens, dim), train_prompt=False)
        return module

    def param_groups(self) -> list[dict[str, Any]]:
        return []

    def _trainable_names(self) -> set[str]:
        return {"soft_prompt"}

    @property
    def trainable_params_(self) -> int:
        return self.intrinsic_dim  # the numbers the search optimises; the prompt is A z

    def _prompt(self, z: np.ndarray) -> torch.Tensor:
        flat = self.projection_ @ torch.as_tensor(z, dtype=torch.float32)
        return flat.view(self.prompt_tokens, -1)

    @torch.inference_mode()
    def _loss(self, batches: list[tuple[Any, torch.Tensor]], z: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of candidate z on the (pre-batched) training set."""
        self.module_.set_prompt(self._prompt(z))
        total, correct, n = 0.0, 0, 0
        for batch, y in batches:
            logits = self.scores(batch)
            y = y.to(logits.device)
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        return total / n, correct / n

    @torch.inference_mode()
    def _losses(self, batches: list[tuple[Any, torch.Tensor]], zs: list[np.ndarray]) -> list[tuple[float, float]]:
        """(loss, accuracy) of every candidate, several candidates per forward pass (see ``max_rows``)."""
        if self.max_rows <= 0:
            return [self._loss(batches, z) for z in zs]
        module = self.module_
        device = next(module.parameters()).device
        total = torch.zeros(len(zs), dtype=torch.float64)
        correct = torch.zeros(len(zs), dtype=torch.long)
        n = 0
        try:
            for batch, y in batches:
                rows = len(batch)
                chunk = max(1, self.max_rows // rows)
                ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
                pos, y = self._position(batch).to(device), y.to(device)
                for c in range(0, len(zs), chunk):
                    group = zs[c : c + chunk]
                    prompts = torch.stack([self._prompt(z) for z in group]).to(device)  # (P, T, d)
                    module.row_prompts = prompts.repeat_interleave(rows, dim=0)  # rows of candidate p together
                    logits = module(ids.repeat(len(group), 1), mask.repeat(len(group), 1), pos.repeat(len(group)))
                    yy = y.repeat(len(group))
                    ce = F.cross_entropy(logits.float(), yy, reduction="none").view(len(group), rows)
                    total[c : c + len(group)] += ce.sum(1).double().cpu()
                    correct[c : c + len(group)] += (logits.argmax(1) == yy).view(len(group), rows).sum(1).cpu()
                n += rows
        finally:
            module.row_prompts = None
        return [(float(t) / n, int(k) / n) for t, k in zip(total, correct, strict=True)]

    def _train(self, ids: list[list[int]], y: torch.Tensor, dev_ids, dev_y) -> dict[str, Any]:
        import cma

        self.module_.eval()
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # length-sorted: little padding
        step = max(1, self.batch_size * 4)
        batches = [(self._batch([ids[i] for i in order[b:b + step]]), y[order[b:b + step]])
                   for b in range(0, len(order), step)]
        # cma treats seed 0 as "draw a random seed": offset by one so every seed is reproducible
        opts = {"seed": self.seed + 1, "popsize": self.popsize, "maxiter": self.budget // self.popsize,
                "verbose": -9}
        if self.bound > 0:
            opts["bounds"] = [-self.bound, self.bound]
        es = cma.CMAEvolutionStrategy(self.intrinsic_dim * [0.0], self.sigma, inopts=opts)
        history: dict[str, Any] = {"loss": [], "train_accuracy": [], "dev_accuracy": [], "budget": self.budget}
        calls = 0
        best_dev = (-1.0, 0, np.zeros(self.intrinsic_dim))

        def dev_check(at: int, z: np.ndarray, best: tuple) -> tuple:
            """Score candidate z on the dev split; the (accuracy, call, z) to keep."""
            acc = self._dev_accuracy(dev_ids, dev_y, z)
            history["dev_accuracy"].append((at, acc))
            return (acc, at, z) if acc > best[0] else best

        best_train = (float("inf"), np.zeros(self.intrinsic_dim))
        start = time.perf_counter()
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[info]}"), transient=True, disable=not self.progress)
        with bar:
            job = bar.add_task("BBT (CMA-ES) calls", total=self.budget, info="")
            while not es.stop() and calls + self.popsize <= self.budget:
                solutions = es.ask()
                fitness = []
                scored = self._losses(batches, solutions)
                acc = scored[-1][1]  # training accuracy of the generation's last candidate
                for z, (loss, _) in zip(solutions, scored, strict=True):
                    calls += 1
                    fitness.append(loss)
                    if loss < best_train[0]:
                        best_train = (loss, np.array(z))
                    if dev_ids is not None and calls % self.eval_every == 0:
                        best_dev = dev_check(calls, best_train[1], best_dev)
                es.tell(solutions, fitness)
                history["loss"].append(float(min(fitness)))
                history["train_accuracy"].append(acc)
                info = f"best loss {best_train[0]:.3f}"
                if best_dev[0] >= 0:
                    info += f" · best dev acc {best_dev[0]:.3f} @ {best_dev[1]}"
                bar.update(job, completed=calls, info=info)
        if dev_ids is not None and (not history["dev_accuracy"] or history["dev_accuracy"][-1][0] != calls):
            best_dev = dev_check(calls, best_train[1], best_dev)  # the final candidate gets its say
        chosen = best_dev[2] if best_dev[0] >= 0 else best_train[1]
        self.module_.set_prompt(self._prompt(chosen))
        self.z_ = np.asarray(chosen, dtype=np.float32)
        dev_queries = len(history["dev_accuracy"]) * (len(dev_ids) if dev_ids is not None else 0)
        history.update(calls=calls, train_queries=calls * len(ids), dev_queries=dev_queries,
                       best_train_loss=best_train[0], seconds=time.perf_counter() - start)
        if best_dev[0] >= 0:
            history["best_call"], history["best_dev_accuracy"] = best_dev[1], best_dev[0]
        self.calls_ = calls
        return history

    def _dev_accuracy(self, dev_ids: list[list[int]], dev_y: np.ndarray, z: np.ndarray) -> float:
        self.module_.set_prompt(self._prompt(z))
        return float((self._predict_ids(dev_ids).argmax(1) == dev_y).mean())
