"""Vanilla prompt tuning (Lester et al., 2021) with HF PEFT's own prompt encoder.

The soft prompt is PEFT's ``PromptEmbedding`` (initialised from sampled vocabulary embeddings), so its
parameters and initialisation are exactly what PEFT users get; it is driven by the same forward pass
and trainer as ADePT and DePT so that step times and latencies compare like for like.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backends import Backend
from ..backends.models import DEFAULT_MODEL
from .base import register
from .input_edge import InputEdgeMethod, PromptedModel


class PTModule(PromptedModel):
    def __init__(self, frozen: Any, kind: str, label_ids, decoder_prefix, encoder: nn.Module, tokens: int) -> None:
        super().__init__(frozen, kind, label_ids, decoder_prefix)
        self.encoder = encoder
        self.register_buffer("token_ids", torch.arange(tokens), persistent=False)

    def prompt(self, batch_size: int) -> torch.Tensor:
        return self.encoder(self.token_ids)[None].expand(batch_size, -1, -1)


@register
class PromptTuning(InputEdgeMethod):
    """``prompt_tokens`` soft-prompt vectors (PEFT ``PromptTuningConfig``, ``SAMPLE_VOCAB`` init)."""

    name = "pt"

    def __init__(self, model: str | Backend = DEFAULT_MODEL, *, prompt_tokens: int = 100, lr: float = 0.3,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.prompt_tokens = prompt_tokens
        self.lr = lr

    def build(self, model: Any, tokenizer: Any, kind: str) -> nn.Module:
        from peft import PromptTuningConfig, PromptTuningInit
        from peft.tuners.prompt_tuning import PromptEmbedding

        embedding = model.get_input_embeddings()
        config = PromptTuningConfig(num_virtual_tokens=self.prompt_tokens, token_dim=embedding.weight.shape[1],
                                    num_transformer_submodules=1, prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
        torch.manual_seed(self.seed)
        encoder = PromptEmbedding(config, embedding)
        encoder.embedding.weight.data = encoder.embedding.weight.data.float()
        encoder.embedding.weight.requires_grad_(True)
        return PTModule(model, kind, self.label_ids_, self.decoder_prefix_, encoder, self.prompt_tokens)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.module_.encoder.parameters()), "lr": self.lr}]
