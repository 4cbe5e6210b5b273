"""ADePT: Adaptive Decomposed Prompt Tuning (Tang et al., 2025; reference code HungerPWAY/ADePT).

A short soft prompt of m vectors is prepended to the input embeddings, and a token-shared feed-forward
network adds an offset to every real input token's embedding e:

    e' = e + W2 · relu(dropout(W1 · e + b1)) + b2        (bottleneck r; W2, b2 start at zero)

so training starts from the frozen model's own behaviour. As in the reference, dropout (0.1) acts on
the bottleneck pre-activation during training, W1 is Kaiming-uniform, and the prompt and the network
have separate learning rates (reference: 3e-1 and 1e-4).

Where edgetune differs: the reference pads every input to 256 tokens and offsets the padding too; here
only real tokens are offset (padding is masked out of attention anyway, so offsetting it only costs
compute and makes results depend on the padding length). ``prompt_tokens=0`` is allowed (the network alone).

Because the network sees only the token's own embedding, it can be folded into the embedding table:
:meth:`ADePT.merge` returns the frozen model with a new input-embedding matrix plus the short prompt,
with no extra inference cost (the reference code and PEFT do not offer this).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backends.local import LabelReader
from ..errors import EdgetuneError
from .configs.adept import ADePTConfig
from .core.budget import Budget, largest_rank
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel
from .core.registry import register


class ADePTModule(PromptedModel):
    def __init__(self, frozen: Any, reader: LabelReader, prompt: torch.Tensor, rank: int, dropout: float) -> None:
        super().__init__(frozen, reader, soft_prompt=prompt)
        d = prompt.shape[1]
        self.w1 = nn.Linear(d, rank)
        self.w2 = nn.Linear(rank, d)
        # As the reference: its first matrix is (d, r) with Kaiming-uniform(a=√5) over fan-in r, i.e. uniform
        # in ±1/√r, and its bias starts at zero (nn.Linear's own default would be ±1/√d: 5.5× smaller at
        # d=576, r=19, and a random bias). The second layer starts at zero, so training starts from the model.
        bound = 1.0 / math.sqrt(rank)
        nn.init.uniform_(self.w1.weight, -bound, bound)
        nn.init.zeros_(self.w1.bias)
        nn.init.zeros_(self.w2.weight)
        nn.init.zeros_(self.w2.bias)
        self.dropout = dropout

    def offset(self, e: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(self.w1(e), p=self.dropout, training=self.training)
        return self.w2(F.relu(hidden))

    def transform(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return embeds + self.offset(embeds) * attention_mask[..., None].to(embeds.dtype)


@dataclass
class Merged:
    """What :meth:`ADePT.merge` returns: a plain model with new input embeddings, and the prompt to prepend."""

    model: Any
    prompt: torch.Tensor
    module: PromptedModel  # scores prompts with the merged model: no offset network left


def adept_params(d: int, m: int, r: int) -> int:
    """Prompt, then the two layers of the token-shared network."""
    return m * d + (d * r + r) + (r * d + d)


@register
class ADePT(GradientMethod):
    """Soft prompt + token-shared offset network. ``prompt_tokens``/``rank`` default to a budget match
    with 100-token prompt tuning (:meth:`match_budget`).

    Attributes
    ----------
    rank_ : int
        The bottleneck used.
    module_ : torch.nn.Module
        The prompted model, holding the trained prompt and offset network; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = ADePTConfig

    @classmethod
    def match_budget(cls, d: int, prompt_tokens: int = 60, budget_tokens: int = 100) -> Budget:
        return largest_rank(cls.name, lambda r: adept_params(d, prompt_tokens, r), budget_tokens * d,
                            prompt_tokens, budget_tokens)

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        d = self.saved_axis(tensors, "w2.bias", 0)
        r = self.rank or self.match_budget(d, self.prompt_tokens, self.budget_tokens).rank
        return {"soft_prompt": (self.prompt_tokens, d), "w1.weight": (r, d), "w1.bias": (r,), "w2.weight": (d, r),
                "w2.bias": (d,)}

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        d = embedding.weight.shape[1]
        self.rank_ = self.rank or self.match_budget(d, self.prompt_tokens, self.budget_tokens).rank
        prompt = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        return ADePTModule(model, self.reader_, prompt, self.rank_, self.dropout)

    def param_groups(self) -> list[dict[str, Any]]:
        m = self.module_
        return [{"params": [m.soft_prompt], "lr": self.learning_rate("lr_prompt")},
                {"params": list(m.w1.parameters()) + list(m.w2.parameters()), "lr": self.learning_rate("lr_network")}]

    @torch.no_grad()
    def offset_ratio(self, ids: list[list[int]]) -> float | None:
        module = self.module_.eval()
        device = next(module.parameters()).device
        e = module.input_embedding()(torch.tensor(sorted({i for row in ids for i in row}), device=device)).float()
        return float((module.offset(e).norm(dim=-1) / e.norm(dim=-1).clamp_min(1e-12)).mean())

    @torch.no_grad()
    def merge(self) -> Merged:
        """Fold the offset network into a copy of the input-embedding table (dropout off).

        Returns the frozen model (a copy, with its input embeddings untied from the output layer) and the
        soft prompt; :attr:`Merged.module` scores prompts exactly like the unmerged method.
        """
        self._check_fitted()
        module = self.module_.eval()
        model = copy.deepcopy(module.frozen)
        embedding = copy.deepcopy(module.input_embedding())  # a new Parameter: untied from the output layer
        weight = embedding.weight
        scale = getattr(embedding, "embed_scale", None)  # Gemma scales embeddings in forward()
        scale = float(scale) if scale is not None else 1.0
        rows = []
        for start in range(0, weight.shape[0], 8192):
            e = weight[start : start + 8192].float() * scale
            rows.append(((e + module.offset(e)) / scale).to(weight.dtype))
        embedding.weight = nn.Parameter(torch.cat(rows), requires_grad=False)
        if self.kind_ == "seq2seq":  # only the encoder reads the prompt; the decoder keeps its table
            model.get_encoder().set_input_embeddings(embedding)
        else:
            model.set_input_embeddings(embedding)
        if getattr(model.config, "tie_word_embeddings", False):
            model.config.tie_word_embeddings = False
        prompt = module.soft_prompt.detach().clone()
        merged = PromptedModel(model, self.reader_, soft_prompt=prompt, train_prompt=False).eval()
        if merged.frozen.get_output_embeddings() is not None and self.kind_ == "causal":
            out_w = merged.frozen.get_output_embeddings().weight
            if out_w.data_ptr() == embedding.weight.data_ptr():
                raise EdgetuneError("merging failed to untie input and output embeddings")
        return Merged(model, prompt, merged)
