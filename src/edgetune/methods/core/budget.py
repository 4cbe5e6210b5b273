"""Matching trainable-parameter budgets across input-edge methods.

The budget defaults to vanilla prompt tuning with 100 tokens: ``100 · d`` parameters for hidden size d.
Each method declares its own rule (``budget_rule``, and a ``match_budget`` class method where the rule
picks a rank); this module holds what the rules share: the :class:`Budget` record and the search for the
largest rank whose count fits. The ADePT paper's 60 tokens + r=19 for d=768 and DePT's 60 + r=30 with
s=256 are what these rules give.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...errors import EdgetuneError


@dataclass(frozen=True)
class Budget:
    method: str
    prompt_tokens: int
    rank: int
    params: int
    budget: int


def largest_rank(method: str, count: Callable[[int], int], budget: int, prompt_tokens: int,
                 budget_tokens: int) -> Budget:
    """The largest rank r >= 1 with ``count(r) <= budget`` for a count that grows linearly in r."""
    step = count(1) - count(0)
    r = (budget - count(0)) // step
    if r < 1:
        raise EdgetuneError(f"{method}: {prompt_tokens} prompt tokens leave no room for rank >= 1 within "
                            f"{budget_tokens} tokens; lower prompt_tokens or raise budget_tokens")
    return Budget(method, prompt_tokens, int(r), int(count(r)), budget)


def lora_rank(layer_shapes: list[tuple[int, int]], budget: int) -> int:
    """The rank whose LoRA parameter count ``r · Σ(in + out)`` is closest to ``budget`` (at least 1)."""
    per_rank = sum(i + o for i, o in layer_shapes)
    return max(1, round(budget / per_rank))
