"""Vanilla prompt tuning (Lester et al., 2021) with HF PEFT's own prompt encoder.

The soft prompt is PEFT's ``PromptEmbedding``, so its parameters are exactly what PEFT users get; it starts
from the task's own words (``prompt_init="text"``, PEFT's ``TEXT`` initialisation; ``"vocab"`` is PEFT's
``SAMPLE_VOCAB``). It is driven by the same prompted model and trainer as ADePT and DePT, so that step
times and latencies compare like for like.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backends.local import LabelReader
from .configs.prompt_tuning import PromptTuningConfig
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel
from .core.registry import register


class PTModule(PromptedModel):
    def __init__(self, frozen: Any, reader: LabelReader, encoder: nn.Module, tokens: int) -> None:
        super().__init__(frozen, reader)
        self.encoder = encoder
        self.register_buffer("token_ids", torch.arange(tokens), persistent=False)

    def prompt(self, batch_size: int) -> torch.Tensor:
        return self.encoder(self.token_ids)[None].expand(batch_size, -1, -1)


@register
class PromptTuning(GradientMethod):
    """``prompt_tokens`` soft-prompt vectors (PEFT ``PromptTuningConfig``; text initialisation by default).

    Attributes
    ----------
    module_ : torch.nn.Module
        The prompted model, holding the trained soft prompt; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = PromptTuningConfig

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        return {"encoder.embedding.weight": (self.prompt_tokens, None)}

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        from peft import PromptTuningConfig, PromptTuningInit
        from peft.tuners.prompt_tuning import PromptEmbedding

        config = PromptTuningConfig(num_virtual_tokens=self.prompt_tokens, token_dim=embedding.weight.shape[1],
                                    num_transformer_submodules=1, prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
        torch.manual_seed(self.seed)
        encoder = PromptEmbedding(config, embedding)
        if self.prompt_init != "vocab":  # PEFT's TEXT init loads a tokenizer by name; set the same vectors here
            encoder.embedding.weight.data = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        encoder.embedding.weight.data = encoder.embedding.weight.data.float()
        encoder.embedding.weight.requires_grad_(True)
        return PTModule(model, self.reader_, encoder, self.prompt_tokens)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.module_.encoder.parameters()), "lr": self.learning_rate("lr_prompt")}]
