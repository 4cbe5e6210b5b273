"""AdamW for weights held in bfloat16: float32 moments, float32 arithmetic, stochastic rounding on write-back.

Full fine-tuning of a half-precision model would otherwise need a float32 copy of every weight (4 bytes each
beside the backend's 2): a plain AdamW step on bfloat16 weights rounds to nearest, and an update smaller than half
a bfloat16 step (8 significant bits: about 0.4 % of the weight) is lost every time — at fine-tuning rates
(1e-5 moves a weight of 0.05 by 0.02 %) almost all of them are. Rounding the updated value up or down at random,
with the probability that makes the rounding unbiased, keeps every update in expectation (Gupta et al., 2015,
"Deep learning with limited numerical precision"; Zamirai et al., 2020, "Revisiting BFloat16 training").

Written here because torch's optimisers have no stochastic rounding and torchao's bf16 AdamW is private
(``torchao.optim._AdamW``) and compiled with ``torch.compile``. Weights in float32 take the plain AdamW path, so
one optimiser serves a mixed set of groups.
"""

from __future__ import annotations

from typing import Any

import torch


def stochastic_round_(target: torch.Tensor, value: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Write float32 ``value`` into bfloat16 ``target``, rounding up or down at random so that the expected
    result is ``value`` (a bfloat16 is the upper 16 bits of a float32: add uniform noise below them, then cut)."""
    bits = value.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=bits.device, generator=generator)
    rounded = (bits + noise) & -65536  # 0xFFFF0000 as a signed int32
    target.copy_(rounded.view(torch.float32))  # exact: the low 16 bits are zero


class BF16AdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments) whose bfloat16 weights are updated in float32 and
    written back with stochastic rounding; float32 weights are updated exactly. Moments are float32 whatever
    the weight's format. ``seed`` seeds the rounding noise."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, seed: int = 0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    slice: int = 1 << 20  # weights updated at once (float32 temporaries: a few × 4 MB)

    def _update(self, p: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, lr: float, b1: float,
                b2: float, eps: float, wd: float, t: int) -> None:
        """One AdamW update of ``p`` (or a slice of it) in float32, written back exactly or stochastically rounded."""
        g = grad.float()
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**t)).sqrt_().add_(eps)
        w = p.float() if p.dtype != torch.float32 else p
        w.mul_(1 - lr * wd).addcdiv_(m, denom, value=-lr / (1 - b1**t))
        if p.dtype == torch.bfloat16:
            stochastic_round_(p, w, self._generator(p.device))
        elif p.dtype != torch.float32:
            p.copy_(w)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                t = state["step"]
                if p.dtype == torch.float32 or not p.is_contiguous():
                    self._update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], lr, b1, b2, eps, wd, t)
                    continue
                # in slices: the float32 temporaries of a bfloat16 weight stay small (an embedding table of 28M
                # weights would otherwise need ~5 float32 copies of itself for one step)
                flat, grad = p.view(-1), p.grad.reshape(-1)
                m, v = state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1)
                for a in range(0, flat.numel(), self.slice):
                    b = a + self.slice
                    self._update(flat[a:b], grad[a:b], m[a:b], v[a:b], lr, b1, b2, eps, wd, t)
        return loss


def adamw(param_groups: list[dict[str, Any]], weight_decay: float, seed: int = 0) -> torch.optim.Optimizer:
    """torch's AdamW, or :class:`BF16AdamW` when a trainable weight is held in bfloat16."""
    if any(p.dtype == torch.bfloat16 for g in param_groups for p in g["params"]):
        return BF16AdamW(param_groups, weight_decay=weight_decay, seed=seed)
    return torch.optim.AdamW(param_groups, weight_decay=weight_decay)
