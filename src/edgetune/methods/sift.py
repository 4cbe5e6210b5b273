"""SIFT: Sparse Increment Fine-Tuning (Song et al., ICML 2024, "Sparse is Enough in Fine-tuning Pre-trained
Large Language Models"; reference code song-wx/SIFT).

Only a few components of the weight matrices are trained: those with the largest gradient magnitude on the
first training batch. Each adapted matrix W reads ``W + scatter(δ)`` where δ is a dense vector of the chosen
components' increments (a ``torch.nn.utils.parametrize`` parametrisation of a copy of the model); AdamW trains
δ alone, so the trainable count is exactly the number of chosen components.

As the reference: top-k per matrix (every matrix gets the same fraction of its components), chosen once, from
the absolute gradient of one batch; every ``nn.Linear`` of the model except the output layer is adapted (the
reference's LLaMA default: all attention and MLP projections). By default the fraction is set so the total
matches the budget (``budget_tokens·d``, as 100-token prompt tuning), split over the matrices by size (largest
remainders, so the total is exact); ``density`` gives the fraction directly (the reference's ``sparse_rate``).

Where edgetune differs: the reference spends its first optimiser step on choosing the components (no update);
here the choice is an extra forward/backward pass on a seeded batch before training (counted in the queries),
so every method gets the same number of update steps. The reference merges δ into W every step and keeps
AdamW's moments on the zeroed vector; here δ stays separate, so the increments are saved sparse — the chosen
indices (int64) and their values, as safetensors — and :meth:`SIFT.merge` folds them back into a plain model.
That is the same arithmetic as the reference's because δ is excluded from weight decay (the reference never
decays its sparse vector): ``weight_decay`` has no effect on SIFT.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import IncompatibleError
from .configs.sift import SIFTConfig
from .core.config import ParamError
from .core.estimator import Costs
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel
from .core.registry import register

INDEX_SUFFIX = ".parametrizations.weight.0.index"


class SparseDelta(nn.Module):
    """``weight + δ`` at the flat positions ``index`` (a parametrisation of a weight matrix)."""

    def __init__(self, index: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index.long())
        self.delta = nn.Parameter(torch.zeros(len(index)))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.reshape(-1).index_add(0, self.index, self.delta.to(weight.dtype)).view_as(weight)


def split_by_size(sizes: list[int], total: int) -> list[int]:
    """``total`` components split over matrices in proportion to their sizes (largest remainders; exact sum)."""
    whole = sum(sizes)
    shares = [total * s / whole for s in sizes]
    counts = [int(x) for x in shares]
    for i in sorted(range(len(sizes)), key=lambda i: counts[i] - shares[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts


@register
class SIFT(GradientMethod):
    """Sparse increments on the components with the largest first-batch gradients (see the module docstring).

    Attributes
    ----------
    n_selected_ : int
        Components trained.
    module_ : torch.nn.Module
        The prompted model, a copy of the model holding the increments; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = SIFTConfig

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        self.d_ = embedding.weight.shape[1]
        # float32: increments added into half-precision weights would round away
        return PromptedModel(copy.deepcopy(model).float(), self.reader_)

    def _targets(self) -> dict[str, nn.Linear]:
        head = self.module_.frozen.get_output_embeddings()
        found = {name: m for name, m in self.module_.named_modules()
                 if isinstance(m, nn.Linear) and m is not head and not parametrize.is_parametrized(m)
                 and (not self.target_modules or name.split(".")[-1] in self.target_modules)}
        if not found:
            raise ParamError(f"sift: target_modules={self.target_modules!r} matches no nn.Linear of this model")
        return found

    def _counts(self, targets: dict[str, nn.Linear]) -> list[int]:
        sizes = [m.weight.numel() for m in targets.values()]
        if self.density is not None:
            counts = [int(self.density * s) for s in sizes]
            if sum(counts) == 0:
                raise ParamError(f"sift: density={self.density} selects no weight (largest adapted matrix: "
                                 f"{max(sizes):,} components); raise density")
            return counts
        total = self.budget_tokens * self.d_
        if total > sum(sizes):
            raise ParamError(f"sift: budget_tokens={self.budget_tokens} asks for {total:,} components but the adapted "
                             f"matrices have {sum(sizes):,}; lower budget_tokens")
        return split_by_size(sizes, total)

    def _select(self, ids: list[list[int]], y: torch.Tensor) -> None:
        """Choose the components from the absolute gradient of ``select_batches`` seeded batches, then
        parametrise each adapted matrix with its increments."""
        targets = self._targets()
        counts = self._counts(targets)
        for m in targets.values():
            m.weight.requires_grad_(True)
        gen = torch.Generator().manual_seed(self.seed + 1)
        order = torch.randperm(len(ids), generator=gen).tolist()
        self.module_.train()
        for b in range(self.select_batches):
            pick = [order[(b * self.batch_size + i) % len(order)] for i in range(min(self.batch_size, len(ids)))]
            logits = self.scores([ids[i] for i in pick])
            loss = nn.functional.cross_entropy(logits, y[pick].to(logits.device))
            loss.backward()
        for m, k in zip(targets.values(), counts, strict=True):
            grad = m.weight.grad
            m.weight.requires_grad_(False)
            m.weight.grad = None
            if k == 0:
                continue
            index = grad.abs().reshape(-1).topk(k).indices.sort().values
            parametrize.register_parametrization(m, "weight", SparseDelta(index.cpu()).to(m.weight.device))
        self.n_selected_ = sum(counts)

    def _train(self, ids: list[list[int]], y: torch.Tensor) -> dict[str, Any]:
        self._select(ids, y)
        return super()._train(ids, y)

    def param_groups(self) -> list[dict[str, Any]]:
        """The increments δ, never weight-decayed (the reference does not decay its sparse vector)."""
        return [{"params": [p for p in self.module_.parameters() if p.requires_grad], "lr": self.learning_rate("lr"),
                 "weight_decay": 0.0}]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The increments and their (int64) indices: the sparse update, nothing of the frozen weights."""
        state = self.module_.state_dict()
        names = self._trainable_names()
        return {k: v for k, v in state.items() if k in names or k.endswith(INDEX_SUFFIX)}

    def _before_load(self, state: dict[str, torch.Tensor]) -> None:
        for key, index in state.items():
            if key.endswith(INDEX_SUFFIX):
                where = key[: -len(INDEX_SUFFIX)]
                try:
                    m = self.module_.get_submodule(where)
                except AttributeError:
                    raise IncompatibleError(f"its increments are for {where!r}, which this model lacks") from None
                delta = state.get(key[: -len("index")] + "delta")
                if not isinstance(m, nn.Linear) or parametrize.is_parametrized(m, "weight"):
                    raise IncompatibleError(f"its increments for {where!r} do not fit that module")
                if (index.dim() != 1 or index.is_floating_point() or delta is None or delta.shape != index.shape
                        or (len(index) and not (int(index.min()) >= 0 and int(index.max()) < m.weight.numel()))):
                    raise IncompatibleError(f"its saved increments for {where!r} are not a set of positions in that "
                                            f"matrix ({m.weight.numel():,} components) with one value each")
                parametrize.register_parametrization(m, "weight", SparseDelta(index).to(m.weight.device))
        self.n_selected_ = sum(int(v.numel()) for k, v in state.items() if k.endswith(INDEX_SUFFIX))

    @torch.no_grad()
    def merge(self) -> Any:
        """A copy of the frozen model with the increments added into its weights (a plain model).

        (Built from the backend's model rather than by removing the parametrisations from a copy of the trained
        one: torch's parametrised classes are shared between a module and its deep copy.)"""
        self._check_fitted()
        model = copy.deepcopy(self.frozen_)
        for name, m in self.module_.frozen.named_modules():
            if parametrize.is_parametrized(m, "weight"):
                model.get_submodule(name).weight.copy_(m.weight)
        return model

    def costs(self) -> Costs:
        costs = super().costs()
        chosen_on = self.select_batches * min(self.batch_size, self.n_train_)
        return Costs(costs.trainable_params, costs.queries + chosen_on, costs.steps)
