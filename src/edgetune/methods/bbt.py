"""Black-Box Tuning (BBT; Sun et al., ICML 2022): derivative-free soft-prompt search with CMA-ES.

The input-side black-box method DecT is compared with. A vector z of ``intrinsic_dim`` numbers is
mapped by a fixed random matrix A (``n_prompt_tokens * d x intrinsic_dim``, normal with std
``projection_scale * std(word embeddings) / (sqrt(intrinsic_dim) * sigma)``, as in the reference
txsun1997/Black-Box-Tuning; the std of the embeddings as the model reads them, so Gemma's ``embed_scale`` is in it
as it is in p0) to a soft prompt ``p0 + A z`` prepended to the input embeddings of the frozen
model. As in the reference's GPT-2 path, p0 is the embeddings of the vocabulary tokens 1000, 1001, ...
(``prompt_init="range"``; ``"zeros"`` searches from zero vectors, ``"text"``/``"vocab"`` as for ADePT).
CMA-ES (the ``cma`` package; start z = 0, step size ``sigma``, population ``popsize``) minimises
the cross-entropy over the label words on the k-shot training set, with forward passes only.

**Budget, counted the way the BBT paper counts it:** one *call* = one candidate prompt evaluated on the
whole k-shot training set; ``budget`` calls in all (default 8,000 = 400 generations of 20). Model
*queries* (forward passes over single samples) are ``calls x len(train)``, plus the dev evaluations. Both are
reported in :attr:`history_`. The dev check: every ``eval_every`` calls the candidate with the best training loss
so far is scored on the dev split, and the prompt with the best dev accuracy is kept. The reference also checks
every ``eval_every`` calls, but scores the candidate evaluated at that call, whatever its training loss; edgetune
scores the best-so-far instead, so a check never spends a dev pass on a candidate the search already rejected.

The search itself is :class:`~edgetune.methods.core.trainers.CMAESTrainer`, shared with other black-box
methods; this module supplies the projection, the prompted model and the batched scoring.

Differences from the reference: the prompt is prepended to every input (the reference's GPT-2 path
also prepends; for RoBERTa it fills placeholder tokens). A generation's candidates share forward passes
(``max_rows``), as the reference's ``--parallel`` does; that changes nothing but the speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .configs.bbt import BBTConfig
from .core.input_edge import ProjectedSearch
from .core.prompted import PromptedModel, embedding_scale
from .core.registry import register


class BBTModule(PromptedModel):
    """The frozen model with a fixed (not gradient-trained) soft prompt that the search overwrites.
    While ``row_prompts`` (p, m, d) is set, it replaces the shared prompt, each candidate prompt followed by
    its share of the rows: that is how a whole population of candidates is scored in one forward pass (on a
    causal model each candidate's keys/values are computed once and shared by its rows)."""

    row_prompts: torch.Tensor | None = None

    def set_prompt(self, prompt: torch.Tensor) -> None:
        with torch.no_grad():
            self.soft_prompt.copy_(prompt)

    def prompt(self, batch_size: int) -> torch.Tensor | None:
        if self.row_prompts is not None:  # p candidates, each for batch_size / p consecutive rows
            return self.row_prompts.repeat_interleave(batch_size // len(self.row_prompts), dim=0)
        return super().prompt(batch_size)

    def prefixes(self) -> torch.Tensor | None:
        return self.row_prompts if self.row_prompts is not None else super().prefixes()


@register
class BBT(ProjectedSearch):
    """CMA-ES over a random low-dimensional projection of a soft prompt (see the module docstring).

    Attributes
    ----------
    z_ : ndarray
        The chosen vector.
    projection_ : torch.Tensor
        The fixed random matrix A.
    calls_ : int
        Calls made.
    module_ : torch.nn.Module
        The prompted model, holding the prompt ``p0 + A z``; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.

    Notes
    -----
    The start is evaluated on dev too and kept unless a candidate beats it there (not in the reference:
    edgetune's rule for every trainer, so a search never returns something worse on dev than where it began).
    With ``max_rows``, up to ``max_rows // len(batch)`` candidates share one pass (the reference's
    ``--parallel``): the same arithmetic as one candidate at a time, far fewer passes; on a GPU, where a small
    model is bound by kernel launches, this is what makes the 8,000-call budget affordable.
    """

    config = BBTConfig

    @property
    def search_dim(self) -> int:
        return self.intrinsic_dim

    def build(self, model: Any, embedding: torch.nn.Module) -> torch.nn.Module:
        self.p0_ = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        return BBTModule(model, self.reader_, soft_prompt=self.p0_.clone(), train_prompt=False)

    def _prepare_search(self, ids: list[list[int]], y: torch.Tensor) -> None:
        """Draw the projection A (only a search needs it: a loaded BBT has its prompt, so loading never allocates
        ``prompt_tokens·d × intrinsic_dim`` numbers), then pre-batch the training set."""
        embedding = self.module_.input_embedding()
        dim = embedding.weight.shape[1]
        std = (self.projection_scale * embedding_scale(embedding, rows=None)
               / (np.sqrt(self.intrinsic_dim) * self.sigma))
        gen = torch.Generator().manual_seed(self.seed)
        self.projection_ = torch.randn(self.prompt_tokens * dim, self.intrinsic_dim, generator=gen) * std
        super()._prepare_search(ids, y)

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        return {"soft_prompt": (self.prompt_tokens, None)}

    def candidate_prompts(self, zs: list[np.ndarray]) -> torch.Tensor:
        return torch.stack([self._prompt(z) for z in zs])

    def _prompt(self, z: np.ndarray) -> torch.Tensor:
        """p0 + A z, as the reference (``Az + p_0``)."""
        flat = self.projection_ @ torch.as_tensor(z, dtype=torch.float32)
        return self.p0_ + flat.view(self.prompt_tokens, -1)

    def set_candidate(self, z: np.ndarray) -> None:
        self.module_.set_prompt(self._prompt(z))
