"""LAMP: prompt tuning via prompt decomposition and compressed outer product (Lan et al., NAACL 2025,
"Efficient and Effective Prompt Tuning via Prompt Decomposition and Compressed Outer Product").

A vocabulary-initialised prompt P0 (m × d) is decomposed by truncated SVD, ``P0 ≈ U_r Σ_r V_r``, and only the
small factors are trained: U (m × r), V (r × d) and a core Q that starts as Σ_r. The prompt is the compressed
outer product ``P = U Q V``. Average pooling over non-overlapping windows of ``pool`` tokens then gives the
m / pool vectors the model reads, in training and at inference (fewer prompt positions: less memory and time).

The core's form (``core``): the paper's method section was not reachable from here (only its abstract and
summaries quoting "U_[:r], Q_[:r], V_[:r]"), and its parameter counts cannot tell the two readings apart
(r·(m + d) + r² vs + r: 7,008 vs 6,952 on T5-Base at r = 8, m = 100). ``"full"``: an r × r Q, every pair of token
pattern u_i and embedding pattern v_j interacting through Q_ij (r² outer products held in r² numbers);
``"diagonal"``: Q = diag(q), the truncated SVD's own form, r outer products u_i ⊗ v_i. Both were run on
held-out train-pool data; the default is the one that scored higher there (benchmarks/results/README.md,
"Where the defaults come from"). Parameters: ``r·(m + d) + r²`` (full) or ``r·(m + d + 1)`` (diagonal); by
default the largest r within the budget (``budget_tokens·d``, as 100-token prompt tuning), at most min(m, d).

The rate: one AdamW rate for every factor (``lr_prompt``), its default chosen on held-out train-pool data;
``lr_prompt="auto"`` gives each factor the worst-case bound of :func:`~edgetune.methods.core.prompted.factor_rates`
(one step moves the product prompt at most as far as prompt tuning's step), which under-fits in 60 steps.
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


def lamp_params(d: int, m: int, r: int, core: str = "full") -> int:
    """U (m × r), the core Q (r × r, or r numbers when diagonal) and V (r × d)."""
    return r * (m + d) + (r * r if core == "full" else r)


def compose(u: torch.Tensor, core: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The prompt U Q V (a 1-D core is the diagonal of Q)."""
    return (u * core if core.dim() == 1 else u @ core) @ v


class LAMPModule(PromptedModel):
    def __init__(self, frozen: Any, reader: LabelReader, prompt: torch.Tensor, rank: int, pool: int,
                 core: str = "full") -> None:
        super().__init__(frozen, reader)
        u, s, vh = torch.linalg.svd(prompt.double(), full_matrices=False)
        self.u = nn.Parameter(u[:, :rank].float().contiguous())
        self.core = nn.Parameter((torch.diag(s[:rank]) if core == "full" else s[:rank]).float().contiguous())
        self.v = nn.Parameter(vh[:rank].float().contiguous())
        self.pool = pool

    def prompt(self, batch_size: int) -> torch.Tensor:
        full = compose(self.u, self.core, self.v)  # (m, d)
        pooled = F.avg_pool1d(full.T[None], self.pool, self.pool)[0].T  # (m / pool, d)
        return pooled[None].expand(batch_size, -1, -1)


@register
class LAMP(GradientMethod):
    """Truncated-SVD prompt factors with a trainable core (full or diagonal), average-pooled (see the module
    docstring).

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
        while r < most and lamp_params(d, self.prompt_tokens, r + 1, self.core) <= self.budget_tokens * d:
            r += 1
        if r < 1:
            raise ParamError(f"lamp: budget_tokens={self.budget_tokens} leaves no room for rank 1 with "
                             f"prompt_tokens={self.prompt_tokens}; raise budget_tokens or lower prompt_tokens")
        return r

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        d = self.saved_axis(tensors, "v", 1)
        r = self.rank_for(d)
        return {"u": (self.prompt_tokens, r), "core": (r, r) if self.core == "full" else (r,), "v": (r, d)}

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        self.rank_ = self.rank_for(embedding.weight.shape[1])
        prompt = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        return LAMPModule(model, self.reader_, prompt, self.rank_, self.pool, self.core)

    def param_groups(self) -> list[dict[str, Any]]:
        m = self.module_
        factors = {"u": m.u, "core": m.core, "v": m.v}
        rates = self.factor_learning_rates("lr_prompt", lambda f: compose(f["u"], f["core"], f["v"]), factors)
        return [{"params": [p], "lr": rates[k]} for k, p in factors.items()]
