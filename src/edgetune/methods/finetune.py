"""Full fine-tuning: every weight of (a copy of) the model trained — the upper reference of the ADePT, DePT
and BBTv2 tables.

Same prompts, label-word loss, trainer, dev split and checkpoint rule as the other gradient methods; only the
trainable set differs. The backend's model is shared and stays frozen, so the method trains a deep copy of it.
The trainer keeps only the checkpoints its rule can still pick (see
:func:`~edgetune.methods.trainers.unchoosable`), so a run holds one or two copies of the weights, not one per
dev check. :meth:`FineTune.save` writes the whole model (every weight, once: tied embeddings are stored once)
as safetensors; :meth:`FineTune.export` writes a plain transformers folder that ``from_pretrained`` loads.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from ..backends import Backend
from .base import register
from .input_edge import GradientMethod
from .prompted import PromptedModel


@register
class FineTune(GradientMethod):
    """All weights trainable (AdamW at ``lr``); no budget knob: the trainable count is the model's size.

    Parameters
    ----------
    model : str or Backend, default=None
        The frozen model: a packaged name, a local folder, a hub id or a backend (None: ``default_model``).
    lr : float, default=1e-5
        AdamW rate of every weight (why this default: benchmarks/results/README.md, 'Where the defaults come from').
    **kwargs
        Shared by every gradient method (see :class:`~edgetune.methods.input_edge.GradientMethod`): ``template``,
        ``label_words``, ``steps``, ``batch_size``, ``eval_every``, ``dev_shots``, ``max_length``, ``grad_accum``,
        ``warmup_ratio``, ``weight_decay``, ``select_by``, ``max_grad_norm``, ``rollback``, ``seed``, ``progress``.

    Attributes
    ----------
    module_ : torch.nn.Module
        The prompted model, a fine-tuned copy of the model; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.input_edge.InputEdgeMethod`.
    """

    name = "finetune"
    display_name = "full fine-tuning"
    smoke_params: ClassVar[dict[str, Any]] = {"steps": 2, "batch_size": 4, "eval_every": 1}

    def __init__(self, model: str | Backend | None = None, *, lr: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.lr = lr

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        trained = copy.deepcopy(model)
        for p in trained.parameters():
            p.requires_grad_(True)
        return PromptedModel(trained, self.reader_)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.module_.parameters() if p.requires_grad], "lr": self.learning_rate("lr")}]

    def export(self, path: str | os.PathLike) -> Path:
        """The fine-tuned model as a transformers folder (safetensors), plus its tokenizer."""
        self._check_fitted()
        target = Path(path)
        self.module_.frozen.save_pretrained(target, safe_serialization=True)
        self.tokenizer_.save_pretrained(target)
        return target
