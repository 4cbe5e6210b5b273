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
from typing import Any, ClassVar

import torch
from torch import nn

from ..backends import Backend
from ..backends.local import LabelReader
from .base import ParamError, check_positive_int, register
from .input_edge import GradientMethod
from .prompted import PROMPT_LR_RATIO, PromptedModel, factor_rates


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
        nn.init.kaiming_uniform_(self.offset_books, a=math.sqrt(5))  # as the reference

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

    Parameters
    ----------
    model : str or Backend, default=None
        The frozen model: a packaged name, a local folder, a hub id or a backend (None: ``default_model``).
    prompt_tokens : int, default=60
        Prompt length m (reference: 60).
    sub_dim : int, default=32
        Slice width of the prompt's codebooks (reference: 32); must divide d.
    codebook_size : int, default=None
        Codewords per prompt slice (None: the largest within ``prompt_tokens·d``).
    offset_sub_dim : int, default=32
        Slice width of the offset's codebooks; must divide d.
    offset_size : int, default=None
        Codewords per offset slice (None: the largest within the rest of the budget).
    positions : int, default=256
        Input positions offset (reference: 256, its padded length).
    budget_tokens : int, default=100
        Trainable-parameter budget ``budget_tokens·d`` (prompt tuning with that many tokens), prompt and offset.
    lr_prompt : float or "auto", default="auto"
        The prompt factors' rate (``"auto"``: one step of the factors moves the prompt by ``prompt_lr_ratio`` × the
        embedding scale, see :func:`~edgetune.methods.prompted.factor_rates`).
    lr_offsets : float, default=1e-3
        The offset factors' rate (reference grid 1e-4 to 5e-3).
    prompt_init : {"text", "vocab", "range", "zeros"}, default="text"
        How the soft prompt starts (see :meth:`~edgetune.methods.input_edge.InputEdgeMethod.initial_prompt`).
    prompt_lr_ratio : float, default=0.3
        The ``"auto"`` rate as a ratio to the embedding scale.
    **kwargs
        Shared by every gradient method (see :class:`~edgetune.methods.input_edge.GradientMethod`): ``template``,
        ``label_words``, ``steps``, ``batch_size``, ``eval_every``, ``dev_shots``, ``max_length``, ``grad_accum``,
        ``warmup_ratio``, ``weight_decay``, ``select_by``, ``max_grad_norm``, ``rollback``, ``seed``, ``progress``.

    Attributes
    ----------
    codebook_size_, offset_size_ : int
        The codebook sizes used (prompt, offset).
    factor_lr_ : dict
        The prompt factors' rates.
    module_ : torch.nn.Module
        The prompted model, holding the trained codebooks and weights; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.input_edge.InputEdgeMethod`.
    """

    name = "accept"
    display_name = "ACCEPT"
    budget_rule = ("K·r·(m + t) ≤ prompt_tokens·d (prompt) and K'·r'·(s + t') ≤ (budget_tokens − prompt_tokens)·d "
                   "(offsets): the largest codebook sizes r, r'")
    smoke_params: ClassVar[dict[str, Any]] = {
        "steps": 2, "batch_size": 4, "eval_every": 1, "prompt_tokens": 4, "budget_tokens": 8, "positions": 8,
        "sub_dim": 8, "offset_sub_dim": 8}

    scaled_lrs: ClassVar[tuple[str, ...]] = ("lr_prompt",)

    def __init__(self, model: str | Backend | None = None, *, prompt_tokens: int = 60, sub_dim: int = 32,
                 codebook_size: int | None = None, offset_sub_dim: int = 32, offset_size: int | None = None,
                 positions: int = 256, budget_tokens: int = 100, lr_prompt: float | str = "auto",
                 lr_offsets: float = 1e-3, prompt_init: str = "text", prompt_lr_ratio: float = PROMPT_LR_RATIO,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.prompt_tokens = prompt_tokens
        self.sub_dim = sub_dim
        self.codebook_size = codebook_size
        self.offset_sub_dim = offset_sub_dim
        self.offset_size = offset_size
        self.positions = positions
        self.budget_tokens = budget_tokens
        self.lr_prompt = lr_prompt
        self.lr_offsets = lr_offsets
        self.prompt_init = prompt_init
        self.prompt_lr_ratio = prompt_lr_ratio

    def _validate_params(self) -> None:
        super()._validate_params()
        check_positive_int(self, "prompt_tokens", "sub_dim", "offset_sub_dim", "positions", "budget_tokens")
        for name in ("codebook_size", "offset_size"):
            if getattr(self, name) is not None:
                check_positive_int(self, name)
        if self.codebook_size is None and self.offset_size is None and self.prompt_tokens >= self.budget_tokens:
            raise ParamError(f"accept: budget_tokens={self.budget_tokens} leaves nothing for the offsets after "
                             f"prompt_tokens={self.prompt_tokens}; raise budget_tokens or lower prompt_tokens")

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
        if self.lr_prompt == "auto":  # the prompt moves as prompt tuning's does (see factor_rates)
            self.factor_lr_ = factor_rates(lambda f: m.mix(f["prompt_weights"], f["prompt_books"]), factors,
                                           self.learning_rate("lr_prompt"))
        else:
            self.factor_lr_ = dict.fromkeys(factors, self.learning_rate("lr_prompt"))
        return [*({"params": [p], "lr": self.factor_lr_[k]} for k, p in factors.items()),
                {"params": [m.offset_weights, m.offset_books], "lr": self.learning_rate("lr_offsets")}]
