"""Full fine-tuning: every weight of (a copy of) the model trained — the upper reference of the ADePT, DePT
and BBTv2 tables.

Same prompts, label-word loss, trainer, dev split and checkpoint rule as the other gradient methods; only the
trainable set differs. The backend's model is shared and stays frozen, so the method trains a deep copy of it:
in float32 by default, or with ``weights="model"`` in the model's own format (a bfloat16 model: bfloat16 weights,
float32 AdamW moments and stochastically rounded updates, :class:`~edgetune.methods.core.optim.BF16AdamW`), so
a half-precision model is fine-tuned without a float32 copy of its weights.
The trainer keeps only the checkpoints its rule can still pick (see
:func:`~edgetune.methods.core.trainers.unchoosable`), so a run holds one or two copies of the weights, not one per
dev check. :meth:`FineTune.save` writes the whole model (every weight, once: tied embeddings are stored once)
as safetensors; :meth:`FineTune.export` writes a plain transformers folder that ``from_pretrained`` loads.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backends.precision import model_dtype
from .configs.finetune import FineTuneConfig
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel
from .core.registry import register


@register
class FineTune(GradientMethod):
    """All weights trainable (AdamW at ``lr``); no budget knob: the trainable count is the model's size.

    Attributes
    ----------
    module_ : torch.nn.Module
        The prompted model, a fine-tuned copy of the model; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = FineTuneConfig

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        trained = copy.deepcopy(model)
        if self.weights == "float32" or model_dtype(trained) != torch.bfloat16:
            trained = trained.float()  # float32 weights and optimiser state, whatever the body's format
        # else bfloat16 weights, float32 moments, stochastic rounding: methods.core.optim.BF16AdamW
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
