"""Trainers that drive a prompted model: AdamW for gradient methods, CMA-ES for black-box ones.

A trainer knows the optimisation loop, the schedule, the seeded data order, dev checkpointing and the
progress bar; it does not know which method it trains. It talks to the method through a small protocol:

- :class:`AdamWTrainer` needs ``scores(ids) -> logits`` (with gradients), ``dev_scores() -> (accuracy, loss)
  | None``, ``dev_size_`` and ``trainable_state()`` to keep the best checkpoint;
- :class:`CMAESTrainer` needs ``losses(zs) -> [(loss, train accuracy)]`` for a generation of candidate
  vectors and ``dev_accuracy_of(z) -> float | None``.

Both return a ``history`` dict (loss curve, dev curve, the chosen step or call, seconds) that ends up in
the method's ``history_`` and the run's record.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .decoders import class_weight_tensor
from .optim import adamw
from .selection import choose, unchoosable

if TYPE_CHECKING:
    from .config import BlackBoxConfig, GradientConfig


def progress_bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), transient=True, disable=not enabled)


class GradientProblem(Protocol):
    module_: torch.nn.Module
    dev_size_: int  # examples in the dev split (0 without one): the loss rule's accuracy window is in them

    def scores(self, ids: Sequence[list[int]]) -> torch.Tensor: ...

    def dev_scores(self) -> tuple[float, float] | None: ...

    def trainable_state(self) -> dict[str, torch.Tensor]: ...


@dataclass
class AdamWTrainer:
    """AdamW, one learning rate per parameter group, linear warm-up then linear decay, gradient
    accumulation, a seeded data order, a dev check every ``eval_every`` steps (and at the end) with the
    best checkpoint kept. Runs under HF Accelerate, so ``accelerate launch`` spreads it over devices.

    ``select_by`` says which checkpoint is best (see :func:`choose`): ``"loss"`` the lowest dev cross-entropy
    among the checks at least as accurate as the start and within two dev examples of the most accurate one
    (so the result is never less accurate on dev than the model it started from), ``"accuracy"`` the highest
    dev accuracy (the earliest of ties; the papers' rule).
    A few-shot dev split scores accuracy in coarse steps (1/32 on 16-shot sst2), so many checks tie or
    differ by one example; its loss separates them.

    ``rollback``: a check that has collapsed (see :meth:`_collapsed`) sends training back to the check that
    would be kept now, with every learning rate halved and AdamW's moments cleared; ``history["rollbacks"]``
    lists (step, restored step).

    Why ``select_by="loss"`` and ``rollback=0.5``: benchmarks/results/README.md, 'Where the defaults come from'."""

    config: GradientConfig  # steps, batch_size, grad_accum, warmup_ratio, weight_decay, eval_every, seed, progress,
    #                         select_by, max_grad_norm, rollback: the method's own declaration, read as is
    description: str = "training"
    check_start: bool = True  # score the dev split before the first step (the start is a candidate)
    max_rollbacks: int = 3
    #: called after each dev check with (step, that check's record: accuracy, loss, and what happened)
    on_check: Callable[[int, dict[str, Any]], None] | None = None

    def train(self, problem: GradientProblem, param_groups: list[dict[str, Any]], ids: Sequence[list[int]],
              y: torch.Tensor) -> dict[str, Any]:
        from accelerate import Accelerator
        from transformers import get_linear_schedule_with_warmup

        accelerator = Accelerator(gradient_accumulation_steps=self.config.grad_accum, cpu=not torch.cuda.is_available())
        optimizer = adamw(param_groups, self.config.weight_decay, self.config.seed)
        steps = self.config.steps
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.config.warmup_ratio * steps), steps)
        # the schedule stays unprepared: Accelerate would step it once per process (it assumes each process has
        # its own batches), but here the processes split one global batch, so it steps once per step
        problem.module_, optimizer = accelerator.prepare(problem.module_, optimizer)

        def state() -> dict[str, torch.Tensor]:
            """The trainable weights by their own names (under `accelerate launch` the module is wrapped in
            DistributedDataParallel, whose names carry a "module." prefix that the unwrapped module lacks)."""
            wrapped, problem.module_ = problem.module_, accelerator.unwrap_model(problem.module_)
            try:
                return problem.trainable_state()
            finally:
                problem.module_ = wrapped

        gen = torch.Generator().manual_seed(self.config.seed)
        class_weight = getattr(self.config, "class_weight", None)
        class_w: Any = None  # class_weight="balanced"'s loss weights, made at the first step (logits give C)
        order: list[int] = []
        checks: list[tuple[int, float, float, dict]] = []  # (step, dev accuracy, dev loss, weights)
        history: dict[str, Any] = {"loss": [], "dev_accuracy": [], "dev_loss": [], "steps": self.config.steps}
        if self.config.rollback:
            history["rollbacks"] = []  # (step, restored step) for each collapse

        def check(step: int) -> str:
            """Score the dev split and keep a copy of the weights (step 0: the start); the choice is made at
            the end, among all checks."""
            scores = problem.dev_scores()
            if scores is None:
                return ""
            acc, loss = scores
            history["dev_accuracy"].append((step, acc))
            history["dev_loss"].append((step, loss))
            checks.append((step, acc, loss, copy.deepcopy({k: v.detach().cpu() for k, v in state().items()})))
            info = f" · dev acc {acc:.3f} loss {loss:.3f}"
            if self.on_check is not None:  # before any rollback: the weights scored are the ones just checked
                self.on_check(step, {"dev_accuracy": acc, "dev_loss": loss})
            back = self._collapsed(checks, problem.dev_size_, len(history.get("rollbacks", [])))
            if back is not None and step < self.config.steps:
                # restore the pick in place (the optimiser keeps its parameters) and slow down
                accelerator.unwrap_model(problem.module_).load_state_dict(checks[back][3], strict=False)
                inner = getattr(schedule, "scheduler", schedule)
                inner.base_lrs = [lr / 2 for lr in inner.base_lrs]
                for group, lr in zip(optimizer.param_groups, inner.get_last_lr(), strict=True):
                    group["lr"] = lr / 2
                getattr(optimizer, "optimizer", optimizer).state.clear()
                history["rollbacks"].append((step, checks[back][0]))
                info += f" · collapsed: back to step {checks[back][0]}, learning rates halved"
            for i in unchoosable(checks, self.config.select_by, problem.dev_size_):  # free weights no rule can pick
                checks[i] = (*checks[i][:3], None)
            return info

        start = time.perf_counter()
        if self.check_start:
            check(0)  # the starting point is a candidate: training can never end worse on dev than it began
        with progress_bar(self.config.progress) as bar:
            job = bar.add_task(self.description, total=self.config.steps, info="")
            for step in range(1, self.config.steps + 1):
                problem.module_.train()
                for _ in range(self.config.grad_accum):
                    if len(order) < self.config.batch_size:
                        order += torch.randperm(len(ids), generator=gen).tolist()
                    pick, order = order[: self.config.batch_size], order[self.config.batch_size :]
                    # under `accelerate launch`, each process takes its share of the global batch
                    pick = pick[accelerator.process_index :: accelerator.num_processes] or pick
                    with accelerator.accumulate(problem.module_):
                        logits = problem.scores([ids[i] for i in pick])
                        if class_weight is not None and class_w is None:
                            class_w = class_weight_tensor(class_weight, y, logits.shape[-1]).to(logits.device)
                        loss = F.cross_entropy(logits, y[pick].to(logits.device), weight=class_w)
                        loss = loss / self.config.grad_accum
                        accelerator.backward(loss)
                seen = loss.detach()
                if accelerator.num_processes > 1:  # every process records (and stops on) the global batch's loss
                    seen = accelerator.reduce(seen, reduction="mean")
                value = float(seen) * self.config.grad_accum
                if not np.isfinite(value):  # stop: the weights may already be damaged; the best checkpoint stays
                    history["stopped"] = f"non-finite loss ({value}) at step {step}; kept the best checkpoint so far"
                    warnings.warn(f"{self.description}: {history['stopped']} (lower the learning rate)", stacklevel=2)
                    optimizer.zero_grad()
                    break
                history["loss"].append(value)
                if self.config.max_grad_norm:
                    norm = accelerator.clip_grad_norm_(
                        [p for g in param_groups for p in g["params"]], self.config.max_grad_norm)
                    history.setdefault("grad_norm", []).append(float(norm))
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                info = f"loss {value:.3f}"
                if step % self.config.eval_every == 0 or step == self.config.steps:
                    info += check(step)
                bar.update(job, advance=1, info=info)
        problem.module_ = accelerator.unwrap_model(problem.module_)
        if checks:
            step, acc, loss, state = checks[choose(checks, self.config.select_by, problem.dev_size_)]
            problem.module_.load_state_dict(state, strict=False)
            history.update(best_step=step, best_dev_accuracy=acc, best_dev_loss=loss, select_by=self.config.select_by)
        history["seconds"] = time.perf_counter() - start
        problem.module_.eval()
        return history

    def _collapsed(self, checks: Sequence[tuple[int, float, float, Any]], n_dev: int, done: int) -> int | None:
        """The index of the check to roll back to when the latest check has collapsed, else None.

        Collapsed: the latest dev accuracy has lost more than ``rollback`` of the gain that the check
        :func:`choose` would keep now made over the start (and more than two dev examples' worth). A run at the
        edge of stability then goes on from its best point at half the rate instead of spending its remaining
        steps collapsed (the run this is for: benchmarks/results/README.md, 'Where the defaults come from')."""
        if not self.config.rollback or done >= self.max_rollbacks or len(checks) < 3:
            return None
        pick = choose(checks[:-1], self.config.select_by, n_dev)
        start, best, now = checks[0][1], checks[pick][1], checks[-1][1]
        lost = best - now
        if best <= start or lost <= 2.0 / max(n_dev, 1) + 1e-9 or lost <= self.config.rollback * (best - start):
            return None
        return pick


class BlackBoxProblem(Protocol):
    def losses(self, zs: list[np.ndarray]) -> list[tuple[float, float]]: ...

    def dev_accuracy_of(self, z: np.ndarray) -> float | None: ...


@dataclass
class CMAESTrainer:
    """CMA-ES (the ``cma`` package) over a ``dim``-dimensional vector, starting at ``x0`` (default 0) with
    step size ``sigma`` and population ``popsize``, for at most ``budget`` calls (one call = one candidate
    scored on the whole training set). The start and, every ``eval_every`` calls, the best candidate so far
    are scored on the dev split; the earliest with the best dev accuracy is returned — the start, unless the
    search beats it (the best training loss without a dev split).

    ``blocks`` > 1 splits the vector into that many equal blocks, each searched by its own CMA-ES
    (BBTv2's divide and conquer): a round gives every block in turn one generation while the other blocks
    stay at their own best so far (``es.result.xbest``, as the reference); candidates are always whole
    vectors, so the problem does not know about blocks."""

    config: BlackBoxConfig  # budget, popsize, sigma, bound, eval_every, seed, progress: the method's declaration
    dim: int
    description: str = "CMA-ES calls"
    x0: np.ndarray | None = None
    blocks: int = 1

    def train(self, problem: BlackBoxProblem,
              on_generation: Callable[[int], None] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        import cma

        x0 = np.zeros(self.dim) if self.x0 is None else np.asarray(self.x0, dtype=np.float64)
        size = self.dim // self.blocks
        # cma treats seed 0 as "draw a random seed": offset by one so every seed is reproducible
        # (modulo 2**32 - 2: cma's seeds stop at 2**32 - 1, and every seed below that keeps its old value)
        opts = {"seed": self.config.seed % (2**32 - 2) + 1, "popsize": self.config.popsize,
                "maxiter": self.config.budget // (self.config.popsize * self.blocks), "verbose": -9}
        if self.config.bound > 0:
            opts["bounds"] = [-self.config.bound, self.config.bound]
        searches = [cma.CMAEvolutionStrategy(list(x0[b * size:(b + 1) * size]), self.config.sigma, inopts=opts)
                    for b in range(self.blocks)]
        current = x0.copy()  # every block at its search's best so far
        history: dict[str, Any] = {"loss": [], "train_accuracy": [], "dev_accuracy": [], "budget": self.config.budget}
        calls = 0
        best_dev: tuple[float, int, np.ndarray] = (-1.0, 0, x0.copy())
        best_train: tuple[float, np.ndarray] = (float("inf"), x0.copy())

        def dev_check(at: int, z: np.ndarray, best: tuple) -> tuple:
            acc = problem.dev_accuracy_of(z)
            if acc is None:
                return best
            history["dev_accuracy"].append((at, acc))
            return (acc, at, z) if acc > best[0] else best

        start = time.perf_counter()
        # the start is the first check, as in the gradient trainer: a search must beat it on dev to be kept
        best_dev = dev_check(0, x0.copy(), best_dev)
        with progress_bar(self.config.progress) as bar:
            job = bar.add_task(self.description, total=self.config.budget, info="")
            while calls + self.config.popsize <= self.config.budget and not all(es.stop() for es in searches):
                for b, es in enumerate(searches):
                    if calls + self.config.popsize > self.config.budget:
                        break
                    if es.stop():
                        continue
                    solutions = es.ask()
                    candidates = []
                    for x in solutions:
                        z = current.copy()
                        z[b * size:(b + 1) * size] = x
                        candidates.append(z)
                    scored = problem.losses(candidates)
                    acc = scored[-1][1]  # training accuracy of the generation's last candidate
                    fitness = []
                    for z, (loss, _) in zip(candidates, scored, strict=True):
                        calls += 1
                        fitness.append(loss)
                        if loss < best_train[0]:
                            best_train = (loss, np.array(z))
                        if calls % self.config.eval_every == 0:
                            best_dev = dev_check(calls, best_train[1], best_dev)
                    es.tell(solutions, fitness)
                    current[b * size:(b + 1) * size] = es.result.xbest
                    history["loss"].append(float(min(fitness)))
                    history["train_accuracy"].append(acc)
                    info = f"best loss {best_train[0]:.3f}"
                    if best_dev[0] >= 0:
                        info += f" · best dev acc {best_dev[0]:.3f} @ {best_dev[1]}"
                    bar.update(job, completed=calls, info=info)
                    if on_generation is not None:
                        on_generation(calls)
        if not history["dev_accuracy"] or history["dev_accuracy"][-1][0] != calls:
            best_dev = dev_check(calls, best_train[1], best_dev)  # the final candidate gets its say
        chosen = best_dev[2] if best_dev[0] >= 0 else best_train[1]
        history.update(calls=calls, best_train_loss=best_train[0], seconds=time.perf_counter() - start)
        if best_dev[0] >= 0:
            history["best_call"], history["best_dev_accuracy"] = best_dev[1], best_dev[0]
        return np.asarray(chosen, dtype=np.float32), history
