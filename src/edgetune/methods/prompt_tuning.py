"""Vanilla prompt tuning (Lester et al., 2021) with HF PEFT's own prompt encoder.

The soft prompt is PEFT's ``PromptEmbedding``, so its parameters are exactly what PEFT users get; it starts
from the task's own words (``prompt_init="text"``, PEFT's ``TEXT`` initialisation; ``"vocab"`` is PEFT's
``SAMPLE_VOCAB``). It is driven by the same prompted model and trainer as ADePT and DePT, so that step
times and latencies compare like for like.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..backends import Backend
from ..backends.local import LabelReader
from .base import check_positive_int, register
from .input_edge import GradientMethod
from .prompted import PROMPT_LR_RATIO, PromptedModel


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

    Parameters
    ----------
    model : str or Backend, default=None
        The frozen model: a packaged name, a local folder, a hub id or a backend (None: ``default_model``).
    prompt_tokens : int, default=100
        Soft-prompt length.
    lr : float or "auto", default="auto"
        AdamW rate of the soft prompt (``"auto"``: ``prompt_lr_ratio`` × the embedding scale).
    prompt_init : {"text", "vocab", "range", "zeros"}, default="text"
        How the soft prompt starts (see :meth:`~edgetune.methods.input_edge.InputEdgeMethod.initial_prompt`).
    prompt_lr_ratio : float, default=0.3
        The ``"auto"`` rate as a ratio to the embedding scale.
    **kwargs
        Shared by every gradient method (see :class:`~edgetune.methods.input_edge.GradientMethod`): ``template``,
        ``label_words``, ``steps``, ``batch_size``, ``eval_every``, ``dev_shots``, ``max_length``, ``grad_accum``,
        ``warmup_ratio``, ``weight_decay``, ``select_by``, ``max_grad_norm``, ``rollback``, ``seed``, ``progress``.

    Attributes
    ----------
    module_ : torch.nn.Module
        The prompted model, holding the trained soft prompt; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.input_edge.InputEdgeMethod`.
    """

    name = "pt"
    display_name = "prompt tuning"
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1, "prompt_tokens": 4}

    scaled_lrs: ClassVar[tuple[str, ...]] = ("lr",)

    def __init__(self, model: str | Backend | None = None, *, prompt_tokens: int = 100, lr: float | str = "auto",
                 prompt_init: str = "text", prompt_lr_ratio: float = PROMPT_LR_RATIO, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.prompt_tokens = prompt_tokens
        self.lr = lr
        self.prompt_init = prompt_init
        self.prompt_lr_ratio = prompt_lr_ratio

    def _validate_params(self) -> None:
        super()._validate_params()
        check_positive_int(self, "prompt_tokens")

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
        return [{"params": list(self.module_.encoder.parameters()), "lr": self.learning_rate("lr")}]
