"""ACCEPT: Adaptive Codebook for Composite and Efficient Prompt Tuning (Lin et al., EMNLP 2024 Findings;
reference code AI-Application-and-Integration-Lab/Accept, a patch on DePT's code).

DePT's two parts, each built from product-quantised codebooks. The embedding dimension d is cut into
K = d / ``sub_dim`` slices; each slice has one codebook of r codewords (r × sub_dim), shared by every token:

- the soft prompt (SCPP): token j's slice k is ``Σ_c w[j, k, c] · codebook[k, c]`` — a free (unnormalised)
  weighted mix of that slice's codewords, as the reference;
- the added offset (SCAP): the same construction for each of the first ``positions`` input positions, added to
  those tokens' embeddings (DePT's low-rank offset replaced by codebooks, the paper's composite).

Parameters: ``K·r·(m + sub_dim)`` for the prompt and ``K'·r'·(positions + sub_dim)`` for the offset. By default
the codebook sizes are the largest that fit the budget (``budget_tokens·d``, 100-token prompt tuning), split as
the reference's README splits it: the prompt gets ``prompt_tokens·d`` (60·d), the offset the rest (40·d).

Where edgetune differs (the reference starts both from Kaiming-uniform noise, or from codebooks it does not
ship): the prompt's factors start as the best rank-r fit (truncated SVD, per slice) of the same text-initialised
prompt ADePT and DePT start from, and the offset's mixing weights start at zero (as DePT's B), so training
starts from the frozen model plus a prompt of the task's own words. As DePT here, only real tokens are offset
and a short input takes the first rows.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..backends.local import LabelReader
from .configs.accept import ACCEPTConfig
from .core.config import ParamError
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel
from .core.registry import register


def codebook_params(d: int, sub_dim: int, rows: int, size: int) -> int:
    """Mixing weights (rows × K × r) plus codebooks (K × r × sub_dim) for K = d / sub_dim slices."""
    return (d // sub_dim) * size * (rows + sub_dim)


def fit_codebooks(target: torch.Tensor, slices: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (n, K, r) and codebooks (K, r, t) whose mix is the best rank-r fit of ``target`` (n, K·t) per slice."""
    n = target.shape[0]
    parts = target.view(n, slices, -1).transpose(0, 1)  # (K, n, t)
    u, s, vh = torch.linalg.svd(parts.double(), full_matrices=False)
    k = min(size, s.shape[1])
    weights = torch.zeros(n, slices, size, dtype=torch.float64)
    books = torch.zeros(slices, size, parts.shape[2], dtype=torch.float64)
    root = s[:, :k].sqrt()
    weights[:, :, :k] = (u[:, :, :k] * root[:, None, :]).transpose(0, 1)
    books[:, :k] = vh[:, :k] * root[:, :, None]
    return weights.float(), books.float()


class ACCEPTModule(PromptedModel):
    def __init__(self, frozen: Any, reader: LabelReader, prompt: torch.Tensor, sub_dim: int, prompt_size: int,
                 offset_sub_dim: int, offset_size: int, positions: int) -> None:
        super().__init__(frozen, reader)
        d = prompt.shape[1]
        weights, books = fit_codebooks(prompt, d // sub_dim, prompt_size)
        self.prompt_weights = nn.Parameter(weights)
        self.prompt_books = nn.Parameter(books)
        k = d // offset_sub_dim
        self.offset_weights = nn.Parameter(torch.zeros(positions, k, offset_size))
        self.offset_books = nn.Parameter(torch.empty(k, offset_size, offset_sub_dim))
        # torch's nn.Linear default (a=√5); the reference initialises these codebooks with a=0 (a √3× wider
        # uniform bound). The offsets start at zero either way (offset_weights = 0); only the codebooks' spread, and
        # so the first steps' gradient on the weights, differ.
        nn.init.kaiming_uniform_(self.offset_books, a=math.sqrt(5))

    @staticmethod
    def mix(weights: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
        """(n, K, r) weights over (K, r, t) codebooks -> (n, K·t) vectors."""
        return torch.einsum("nkc,kct->nkt", weights, books).flatten(1)

    def prompt(self, batch_size: int) -> torch.Tensor:
        return self.mix(self.prompt_weights, self.prompt_books)[None].expand(batch_size, -1, -1)

    def transform(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n = min(embeds.shape[1], self.offset_weights.shape[0])
        offset = self.mix(self.offset_weights[:n], self.offset_books)
        head = embeds[:, :n] + offset[None].to(embeds.dtype) * attention_mask[:, :n, None].to(embeds.dtype)
        return torch.cat([head, embeds[:, n:]], dim=1)


@register
class ACCEPT(GradientMethod):
    """Soft prompt and input offsets built from product-quantised codebooks (see the module docstring).

    Attributes
    ----------
    codebook_size_, offset_size_ : int
        The codebook sizes used (prompt, offset).
    factor_lr_ : dict
        The prompt factors' rates.
    module_ : torch.nn.Module
        The prompted model, holding the trained codebooks and weights; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = ACCEPTConfig

    def sizes(self, d: int) -> tuple[int, int]:
        """The codebook sizes (prompt, offsets) in use for hidden size d (given, or the largest in budget)."""
        for name in ("sub_dim", "offset_sub_dim"):
            if d % getattr(self, name):
                raise ParamError(f"accept: {name}={getattr(self, name)} does not divide the model's width {d}")

        def largest(name: str, rows: int, sub_dim: int, tokens: int) -> int:
            given = getattr(self, name)
            if given is not None:
                return given
            r = tokens * d // codebook_params(d, sub_dim, rows, 1)
            if r < 1:
                raise ParamError(f"accept: budget_tokens={self.budget_tokens} leaves no room for one codeword per "
                                 f"slice ({name}); raise budget_tokens or sub_dim")
            return r

        return (largest("codebook_size", self.prompt_tokens, self.sub_dim, self.prompt_tokens),
                largest("offset_size", self.positions, self.offset_sub_dim, self.budget_tokens - self.prompt_tokens))

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        d = self.saved_axis(tensors, "prompt_books", 0) * self.saved_axis(tensors, "prompt_books", 2)
        size, offset_size = self.sizes(d)
        k, k_off = d // self.sub_dim, d // self.offset_sub_dim
        return {"prompt_weights": (self.prompt_tokens, k, size), "prompt_books": (k, size, self.sub_dim),
                "offset_weights": (self.positions, k_off, offset_size),
                "offset_books": (k_off, offset_size, self.offset_sub_dim)}

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        d = embedding.weight.shape[1]
        self.codebook_size_, self.offset_size_ = self.sizes(d)
        prompt = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        return ACCEPTModule(model, self.reader_, prompt, self.sub_dim, self.codebook_size_, self.offset_sub_dim,
                            self.offset_size_, self.positions)

    def param_groups(self) -> list[dict[str, Any]]:
        m = self.module_
        factors = {"prompt_weights": m.prompt_weights, "prompt_books": m.prompt_books}
        rates = self.factor_learning_rates("lr_prompt", lambda f: m.mix(f["prompt_weights"], f["prompt_books"]),
                                           factors)
        return [*({"params": [p], "lr": rates[k]} for k, p in factors.items()),
                {"params": [m.offset_weights, m.offset_books], "lr": self.learning_rate("lr_offsets")}]
