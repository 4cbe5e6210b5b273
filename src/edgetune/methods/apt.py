"""Adaptive Prefix Tuning (APT; Zhang et al., ACL 2023, "Towards Adaptive Prefix Tuning for
Parameter-Efficient Language Model Fine-tuning").

Prefix tuning in the P-tuning v2 form — trainable keys and values prepended at every attention layer — with a
gate that weighs the prefix per layer and per input: at block i, a token-level gate ``α_i = σ(W_i h_{i-1} + b_i)``
(one weight per prefix token, from the block's input hidden states h_{i-1} averaged over the real tokens) and a
layer-level scale λ_i (a learned scalar) multiply the prefix's keys and values, ``λ_i α_i ⊙ P_k^i`` and
``λ_i α_i ⊙ P_v^i``. The paper's method section was not reachable offline: this follows its abstract ("scores
each individual prefix token via gated weight assignment ... the scaled weight ... balance[s] the inserted
prefix tokens and original input tokens for current layer at coarse-grained level"); the mean pooling of h is
our choice for a decoder (the paper's backbones are encoders).

How it reaches the model, without copying modelling code: the prefix keys/values are a transformers
``DynamicCache`` the input rows are read after (:meth:`LabelReader.read_after`), and a forward pre-hook on each
block (:func:`~edgetune.methods.core.prompted.layer_input_hooks`) sees the block's input, computes the gates and
writes the gated prefix into that block's cache layer before its attention reads it. Causal LMs whose blocks
transformers lists (Llama-style SmolLM2, Gemma-3); any other model is refused naming ``prefix_tokens``.

The prefix starts as the keys and values the frozen model itself computes for the task's own words (the
text initialisation the other prompt methods use; Li & Liang found real-word activations the best start). The
gates start at W = 0, b = 0 (α = ½) and λ = 1. Parameters per block: the prefix's ``2·l·kv`` (kv: the key/value
width, heads × head size) and the gates' ``(d + 1)·l + 1``. The budget counts the prefix only, as P-tuning v2
counts prefix tuning: by default l is the longest prefix whose keys and values fit ``budget_tokens·d``; the gates
come on top and are reported separately (``param_parts_``). On SmolLM2 (30 blocks, kv 192, d 576) the default
budget gives 5 prefix tokens (57,600 prefix parameters) and 86,580 gate parameters. (Charging the gates to the
budget too, as edgetune did before, left one prefix token: a token gate of one scalar per layer, redundant with
the layer scale, so the method's distinguishing part was inert.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backends.local import LabelReader
from ..errors import IncompatibleError
from .configs.apt import APTConfig
from .core.config import ParamError
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel, decoder_layers, embed_ids, layer_input_hooks, text_prompt_ids
from .core.registry import register


def apt_params(blocks: int, d: int, kv: int, tokens: int) -> dict[str, int]:
    """Parameters by part: the prefix keys and values (2·l·kv per block), the gates (the token gate's d·l + l and
    the layer scale's 1 per block)."""
    return {"prefix": blocks * 2 * tokens * kv, "gates": blocks * ((d + 1) * tokens + 1)}


class APTModule(PromptedModel):
    def __init__(self, frozen: Any, reader: LabelReader, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__(frozen, reader)
        blocks, _, tokens, _ = keys.shape  # (L, kv heads, l, head size)
        d = frozen.get_input_embeddings().weight.shape[1]
        self.keys = nn.Parameter(keys)
        self.values = nn.Parameter(values)
        self.gates = nn.ModuleList(nn.Linear(d, tokens) for _ in range(blocks))
        for gate in self.gates:
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)
        self.scales = nn.Parameter(torch.ones(blocks))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        rows, tokens = len(input_ids), self.keys.shape[2]
        cache = DynamicCache(config=self.frozen.config)
        for i in range(len(self.gates)):  # ungated placeholders, replaced by each block's hook
            cache.update(self.keys[i][None].expand(rows, -1, -1, -1), self.values[i][None].expand(rows, -1, -1, -1), i)
        mask = attention_mask[..., None].to(self.keys.dtype)

        def gate(i: int, hidden: torch.Tensor) -> torch.Tensor:
            pooled = (hidden.to(mask.dtype) * mask).sum(1) / mask.sum(1).clamp_min(1)
            weight = (self.scales[i] * torch.sigmoid(self.gates[i](pooled)))[:, None, :, None]  # (b, 1, l, 1)
            layer = cache.layers[i]
            layer.keys = (self.keys[i][None] * weight).to(hidden.dtype)
            layer.values = (self.values[i][None] * weight).to(hidden.dtype)
            return hidden

        embeds = self.input_embedding()(input_ids)
        with layer_input_hooks(decoder_layers(self.frozen, "apt", "prefix_tokens"), gate):
            return self.reader.read_after(self.frozen, cache, tokens, embeds, attention_mask, position)


@register
class APT(GradientMethod):
    """Gated per-layer key/value prefixes (see the module docstring).

    Attributes
    ----------
    prefix_tokens_ : int
        The prefix length used.
    param_parts_ : dict
        Trainable parameters by part, ``{"prefix": …, "gates": …}`` (the budget counts the prefix only).
    module_ : torch.nn.Module
        The prompted model, holding the trained prefixes and gates; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = APTConfig

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        blocks, d = self.saved_axis(tensors, "keys", 0), self.saved_axis(tensors, "gates.0.weight", 1)
        kv = self.saved_axis(tensors, "keys", 1) * self.saved_axis(tensors, "keys", 3)
        tokens = self.prefix_tokens or self._prefix_in_budget(blocks, d, kv)
        keys = (blocks, None, tokens, None)
        return {"keys": keys, "values": keys, "scales": (blocks,),
                **{f"gates.{i}.{p}": (tokens, d) if p == "weight" else (tokens,)
                   for i in range(blocks) for p in ("weight", "bias")}}

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        if self.kind_ != "causal":
            raise IncompatibleError(f"apt: prefix_tokens needs a causal LM (the prefix enters through its key/value "
                                    f"cache); this backend's model is {self.kind_}")
        blocks = len(decoder_layers(model, "apt", "prefix_tokens"))
        d = embedding.weight.shape[1]
        tokens = self.prefix_tokens or self._tokens_in_budget(model, embedding, blocks, d)
        keys, values = self._text_prefix(model, embedding, tokens)
        self.prefix_tokens_ = tokens
        self.param_parts_ = apt_params(blocks, d, keys.shape[1] * keys.shape[3], tokens)
        return APTModule(model, self.reader_, keys, values)

    def param_parts(self) -> dict[str, int]:
        return self.param_parts_

    def _tokens_in_budget(self, model: Any, embedding: nn.Module, blocks: int, d: int) -> int:
        """The longest prefix whose keys and values fit ``budget_tokens·d`` (a one-token prefix tells the key/value
        width); the gates are not charged to the budget (see the module docstring)."""
        keys, _ = self._text_prefix(model, embedding, 1)
        kv = keys.shape[1] * keys.shape[3]
        tokens = self._prefix_in_budget(blocks, d, kv)
        if tokens < 1:
            raise ParamError(f"apt: budget_tokens={self.budget_tokens} leaves no room for one prefix token in "
                             f"each of {blocks} layers ({apt_params(blocks, d, kv, 1)['prefix']:,} prefix "
                             f"parameters); raise budget_tokens")
        return tokens

    def _prefix_in_budget(self, blocks: int, d: int, kv: int) -> int:
        """The longest prefix whose keys and values fit ``budget_tokens·d`` (their count is linear in l)."""
        return self.budget_tokens * d // apt_params(blocks, d, kv, 1)["prefix"]

    @torch.no_grad()
    def _text_prefix(self, model: Any, embedding: nn.Module, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, kv heads, l, head size) keys and values of the task's own words run through the frozen model."""
        ids = text_prompt_ids(self.tokenizer_(self.init_text(), add_special_tokens=False)["input_ids"], tokens)
        cache = self.reader_.prefix_cache(model, embed_ids(embedding, ids)[None].to(embedding.weight))
        keys = torch.stack([layer.keys[0] for layer in cache.layers]).float()
        values = torch.stack([layer.values[0] for layer in cache.layers]).float()
        return keys.cpu().clone(), values.cpu().clone()

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.module_.parameters() if p.requires_grad], "lr": self.learning_rate("lr")}]
