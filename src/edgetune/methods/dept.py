"""DePT: Decomposed Prompt Tuning (Shi & Lipani, ICLR 2024; reference code ZhengxiangShi/DePT).

A short soft prompt plus a low-rank, position-wise offset ``scaling · (A · B)`` (A: s×r, B: r×d;
scaling = offset_scale/√r, the reference's alpha/√r) added to the embeddings of the first s input positions. A is
Kaiming-uniform and B zero, so training starts from the frozen model. Prompt and A/B have separate
learning rates.

Where edgetune differs: the reference pads every input to exactly s tokens so the offset matrix always
fits; here an input of length L < s gets the first L rows, and only real tokens are offset (no forced
padding, so short inputs stay cheap).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..backends.local import LabelReader
from .configs.dept import DePTConfig
from .core.budget import Budget, largest_rank
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel
from .core.registry import register


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

    Attributes
    ----------
    rank_ : int
        The rank used.
    module_ : torch.nn.Module
        The prompted model, holding the trained prompt and offsets; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = DePTConfig

    @classmethod
    def match_budget(cls, d: int, prompt_tokens: int = 60, budget_tokens: int = 100, positions: int = 256) -> Budget:
        return largest_rank(cls.name, lambda r: dept_params(d, prompt_tokens, r, positions), budget_tokens * d,
                            prompt_tokens, budget_tokens)

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        d = self.saved_axis(tensors, "lora_b", 1)
        r = self.rank or self.match_budget(d, self.prompt_tokens, self.budget_tokens, self.positions).rank
        return {"soft_prompt": (self.prompt_tokens, d), "lora_a": (self.positions, r), "lora_b": (r, d)}

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        d = embedding.weight.shape[1]
        self.rank_ = self.rank or self.match_budget(d, self.prompt_tokens, self.budget_tokens, self.positions).rank
        prompt = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        return DePTModule(model, self.reader_, prompt, self.rank_, self.positions, self.offset_scale)

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
