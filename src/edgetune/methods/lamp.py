"""LAMP: prompt tuning via prompt decomposition and compressed outer product (Lan et al., NAACL 2025,
"Efficient and Effective Prompt Tuning via Prompt Decomposition and Compressed Outer Product").

A vocabulary-initialised prompt P0 (m × d) is decomposed by truncated SVD, ``P0 ≈ U_r Σ_r V_r``, and only the
small factors are trained: U (m × r), V (r × d) and an r × r core Q that starts as Σ_r. The prompt is the
compressed outer product ``P = U Q V = Σ_ij Q_ij · u_i ⊗ v_j``: every pair of token pattern u_i and embedding
pattern v_j can interact through Q (r² outer products held in r² numbers), which is how the prompt tokens
share structure. Average pooling over non-overlapping windows of ``pool`` tokens then gives the m / pool
vectors the model reads, in training and at inference (fewer prompt positions: less memory and time).

Reading of the paper: edgetune was built from the paper's abstract and figure caption (the method section
was not reachable offline); the r × r core Q is our reading of its "U_[:r], Q_[:r], V_[:r]" and matches its
count (r(m + d) + r² ≈ 7k on T5-Base at r = 8, m = 100). Parameters: ``r·(m + d) + r²``; by default the
largest r within the budget (``budget_tokens·d``, as 100-token prompt tuning) and at most min(m, d).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backends.local import LabelReader
from .configs.lamp import LAMPConfig
from .core.config import ParamError
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel
from .core.registry import register


def lamp_params(d: int, m: int, r: int) -> int:
    """U (m × r), the core Q (r × r) and V (r × d)."""
    return r * (m + d) + r * r


class LAMPModule(PromptedModel):
    def __init__(self, frozen: Any, reader: LabelReader, prompt: torch.Tensor, rank: int, pool: int) -> None:
        super().__init__(frozen, reader)
        u, s, vh = torch.linalg.svd(prompt.double(), full_matrices=False)
        self.u = nn.Parameter(u[:, :rank].float().contiguous())
        self.core = nn.Parameter(torch.diag(s[:rank]).float())
        self.v = nn.Parameter(vh[:rank].float().contiguous())
        self.pool = pool

    def prompt(self, batch_size: int) -> torch.Tensor:
        full = self.u @ self.core @ self.v  # (m, d)
        pooled = F.avg_pool1d(full.T[None], self.pool, self.pool)[0].T  # (m / pool, d)
        return pooled[None].expand(batch_size, -1, -1)


@register
class LAMP(GradientMethod):
    """Truncated-SVD prompt factors with a trainable core, average-pooled (see the module docstring).

    Attributes
    ----------
    rank_ : int
        The rank used.
    factor_lr_ : dict
        Each factor's rate.
    module_ : torch.nn.Module
        The prompted model, holding the trained factors; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = LAMPConfig

    def rank_for(self, d: int) -> int:
        """The rank in use for hidden size d (given, or the largest within the budget)."""
        most = min(self.prompt_tokens, d)
        if self.rank is not None:
            if self.rank > most:
                raise ParamError(f"lamp: rank={self.rank} exceeds min(prompt_tokens, d) = {most}")
            return self.rank
        r = 0
        while r < most and lamp_params(d, self.prompt_tokens, r + 1) <= self.budget_tokens * d:
            r += 1
        if r < 1:
            raise ParamError(f"lamp: budget_tokens={self.budget_tokens} leaves no room for rank 1 with "
                             f"prompt_tokens={self.prompt_tokens}; raise budget_tokens or lower prompt_tokens")
        return r

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        d = self.saved_axis(tensors, "v", 1)
        r = self.rank_for(d)
        return {"u": (self.prompt_tokens, r), "core": (r, r), "v": (r, d)}

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        self.rank_ = self.rank_for(embedding.weight.shape[1])
        prompt = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        return LAMPModule(model, self.reader_, prompt, self.rank_, self.pool)

    def param_groups(self) -> list[dict[str, Any]]:
        m = self.module_
        factors = {"u": m.u, "core": m.core, "v": m.v}
        rates = self.factor_learning_rates("lr_prompt", lambda f: f["u"] @ f["core"] @ f["v"], factors)
        return [{"params": [p], "lr": rates[k]} for k, p in factors.items()]
