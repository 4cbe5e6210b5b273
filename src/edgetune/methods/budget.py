"""Matching trainable-parameter budgets across input-edge methods.

The budget defaults to vanilla prompt tuning with 100 tokens: ``100 · d`` parameters for hidden size d.
For a prompt of m tokens:

- ADePT: ``m·d + (d·r + r) + (r·d + d)`` (prompt, then the two layers of the token-shared network);
- DePT: ``m·d + s·r + r·d`` (prompt, then A: s×r and B: r×d for s offset positions);

and r is the largest rank that keeps the total within the budget (the ADePT paper's 60 tokens + r=19
for d=768 and DePT's 60 + r=30 with s=256 are exactly these). LoRA's rank is chosen the same way from
the shapes of the layers it adapts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import EdgetuneError


@dataclass(frozen=True)
class Budget:
    method: str
    prompt_tokens: int
    rank: int
    params: int
    budget: int


def adept_params(d: int, m: int, r: int) -> int:
    return m * d + (d * r + r) + (r * d + d)


def dept_params(d: int, m: int, r: int, positions: int) -> int:
    return m * d + positions * r + r * d


def match_budget(method: str, hidden_size: int, prompt_tokens: int = 60, budget_tokens: int = 100,
                 positions: int = 256) -> Budget:
    """m and the largest r such that ``method``'s trainable parameters fit ``budget_tokens · d``."""
    d, m = hidden_size, prompt_tokens
    budget = budget_tokens * d
    if method == "pt":
        return Budget("pt", budget_tokens, 0, budget, budget)
    if method == "adept":
        r = (budget - m * d - d) // (2 * d + 1)
        count = adept_params(d, m, r)
    elif method == "dept":
        r = (budget - m * d) // (positions + d)
        count = dept_params(d, m, r, positions)
    else:
        raise EdgetuneError(f"no budget rule for {method!r}")
    if r < 1:
        raise EdgetuneError(f"{method}: {m} prompt tokens leave no room for rank >= 1 within {budget_tokens} tokens")
    return Budget(method, m, int(r), int(count), budget)


def lora_rank(layer_shapes: list[tuple[int, int]], budget: int) -> int:
    """The rank whose LoRA parameter count ``r · Σ(in + out)`` is closest to ``budget`` (at least 1)."""
    per_rank = sum(i + o for i, o in layer_shapes)
    return max(1, round(budget / per_rank))
