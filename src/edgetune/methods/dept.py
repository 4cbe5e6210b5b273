"""DePT: Decomposed Prompt Tuning (Shi & Lipani, ICLR 2024; reference code ZhengxiangShi/DePT).

A short soft prompt plus a low-rank, position-wise offset ``scaling · (A · B)`` (A: s×r, B: r×d;
scaling = alpha/√r as in the reference) added to the embeddings of the first s input positions. A is
Kaiming-uniform and B zero, so training starts from the frozen model. Prompt and A/B have separate
learning rates.

Where edgetune differs: the reference pads every input to exactly s tokens so the offset matrix always
fits; here an input of length L < s gets the first L rows, and only real tokens are offset (no forced
padding, so short inputs stay cheap).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..backends import Backend
from ..backends.local import LabelReader
from .base import check_positive_int, check_positive_number, check_whole, register
from .budget import Budget, largest_rank
from .input_edge import GradientMethod
from .prompted import PROMPT_LR_RATIO, PromptedModel


class DePTModule(PromptedModel):
    def __init__(self, frozen: Any, reader: LabelReader, prompt: torch.Tensor, rank: int, positions: int,
                 alpha: float) -> None:
        super().__init__(frozen, reader, soft_prompt=prompt)
        d = prompt.shape[1]
        self.lora_a = nn.Parameter(torch.empty(positions, rank))
        self.lora_b = nn.Parameter(torch.zeros(rank, d))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = alpha / math.sqrt(rank)

    def transform(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n = min(embeds.shape[1], self.lora_a.shape[0])
        offset = (self.lora_a[:n] @ self.lora_b) * self.scaling  # (n, d)
        mask = attention_mask[:, :n, None].to(embeds.dtype)
        head = embeds[:, :n] + offset[None] * mask
        return torch.cat([head, embeds[:, n:]], dim=1)


def dept_params(d: int, m: int, r: int, positions: int) -> int:
    """Prompt, then A: s×r and B: r×d for s offset positions."""
    return m * d + positions * r + r * d


@register
class DePT(GradientMethod):
    """Soft prompt + low-rank position offsets, budget-matched to 100-token prompt tuning by default.

    Parameters
    ----------
    model : str or Backend, default=None
        The frozen model: a packaged name, a local folder, a hub id or a backend (None: ``default_model``).
    prompt_tokens : int, default=60
        Soft-prompt length m.
    rank : int, default=None
        Rank r of the offsets (None: the largest within the budget).
    positions : int, default=256
        Input positions s that get an offset.
    budget_tokens : int, default=100
        Trainable-parameter budget when ``rank`` is None: ``budget_tokens·d`` (prompt tuning with that many tokens).
    alpha : float, default=8.0
        Offset scaling numerator: the offsets are multiplied by ``alpha/√r``.
    lr_prompt : float or "auto", default="auto"
        AdamW rate of the soft prompt (``"auto"``: ``prompt_lr_ratio`` × the embedding scale).
    lr_offsets : float, default=1e-4
        AdamW rate of the offset factors A and B.
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
    rank_ : int
        The rank used.
    module_ : torch.nn.Module
        The prompted model, holding the trained prompt and offsets; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.input_edge.InputEdgeMethod`.
    """

    name = "dept"
    display_name = "DePT"
    budget_rule = "m·d + (s+d)·r ≤ budget_tokens·d: the largest rank r for prompt_tokens m, positions s"
    smoke_params: ClassVar[dict[str, Any]] = {
        "steps": 2, "batch_size": 4, "eval_every": 1,
        "prompt_tokens": 4, "budget_tokens": 8, "positions": 16}

    scaled_lrs: ClassVar[tuple[str, ...]] = ("lr_prompt",)

    def __init__(self, model: str | Backend | None = None, *, prompt_tokens: int = 60, rank: int | None = None,
                 positions: int = 256, budget_tokens: int = 100, alpha: float = 8.0, lr_prompt: float | str = "auto",
                 lr_offsets: float = 1e-4, prompt_init: str = "text",
                 prompt_lr_ratio: float = PROMPT_LR_RATIO, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.prompt_tokens = prompt_tokens
        self.rank = rank
        self.positions = positions
        self.budget_tokens = budget_tokens
        self.alpha = alpha
        self.lr_prompt = lr_prompt
        self.lr_offsets = lr_offsets
        self.prompt_init = prompt_init
        self.prompt_lr_ratio = prompt_lr_ratio

    @classmethod
    def match_budget(cls, d: int, prompt_tokens: int = 60, budget_tokens: int = 100, positions: int = 256) -> Budget:
        return largest_rank(cls.name, lambda r: dept_params(d, prompt_tokens, r, positions), budget_tokens * d,
                            prompt_tokens, budget_tokens)

    def _validate_params(self) -> None:
        super()._validate_params()
        check_positive_int(self, "prompt_tokens", "positions", "budget_tokens")
        check_whole(self, "rank", 1, none_ok=True)
        check_positive_number(self, "alpha")

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        d = self.saved_axis(tensors, "lora_b", 1)
        r = self.rank or self.match_budget(d, self.prompt_tokens, self.budget_tokens, self.positions).rank
        return {"soft_prompt": (self.prompt_tokens, d), "lora_a": (self.positions, r), "lora_b": (r, d)}

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        d = embedding.weight.shape[1]
        self.rank_ = self.rank or self.match_budget(d, self.prompt_tokens, self.budget_tokens, self.positions).rank
        prompt = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        return DePTModule(model, self.reader_, prompt, self.rank_, self.positions, self.alpha)

    def param_groups(self) -> list[dict[str, Any]]:
        m = self.module_
        return [{"params": [m.soft_prompt], "lr": self.learning_rate("lr_prompt")},
                {"params": [m.lora_a, m.lora_b], "lr": self.learning_rate("lr_offsets")}]

    @torch.no_grad()
    def offset_ratio(self, ids: list[list[int]]) -> float | None:
        module = self.module_.eval()
        device = next(module.parameters()).device
        ratios = []
        offsets = (module.lora_a @ module.lora_b) * module.scaling  # (s, d)
        for row in ids:
            e = module.input_embedding()(torch.tensor(row, device=device))
            n = min(len(row), len(offsets))
            ratios.append(offsets[:n].norm(dim=-1) / e[:n].norm(dim=-1).clamp_min(1e-12))
        return float(torch.cat(ratios).mean()) if ratios else None
