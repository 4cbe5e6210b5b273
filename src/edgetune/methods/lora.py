"""LoRA (Hu et al., 2022) through HF PEFT, as the reference point users trust.

PEFT injects low-rank adapters into a *copy* of the frozen model (the backend's model is shared and
must stay untouched). By default the rank is chosen so the trainable count is closest to the budget
(100-token prompt tuning), on PEFT's default target modules for the architecture.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..errors import EdgetuneError, IncompatibleError
from .configs.lora import LoRAConfig
from .core.budget import lora_rank
from .core.input_edge import GradientMethod
from .core.prompted import PromptedModel
from .core.registry import register


@register
class LoRA(GradientMethod):
    """PEFT ``LoraConfig`` on the default target modules; ``rank=None`` matches the budget.

    Attributes
    ----------
    rank_ : int
        The rank used.
    module_ : torch.nn.Module
        The prompted model, a copy of the model holding the adapters; ``history_``, ``dev_size_`` and the rest: see
        :class:`~edgetune.methods.core.input_edge.InputEdgeMethod`.
    """

    config = LoRAConfig

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        """Every saved adapter has the same rank — the ``rank`` parameter when given — and sits on a targeted
        module; the rank is then taken from them (:meth:`build`), as the budget rule needs the model's layers."""
        ranks = {name: self.saved_axis(tensors, name, 0) for name in tensors if ".lora_A." in name}
        if not ranks:
            raise IncompatibleError("it holds no LoRA adapter weights (lora_A)")
        rank = self.rank or min(ranks.values())
        if self.target_modules:
            stray = sorted(n for n in ranks if n.split(".lora_A.")[0].split(".")[-1] not in self.target_modules)
            if stray:
                raise IncompatibleError(f"adapter {stray[0]!r} is on a module its target_modules "
                                        f"{list(self.target_modules)} do not name")
        self.saved_rank_ = rank
        return {**{name: (rank, None) for name in ranks},
                **{name.replace(".lora_A.", ".lora_B."): (None, rank) for name in ranks}}

    def _targets(self, model: Any) -> list[str]:
        if self.target_modules:
            return list(self.target_modules)
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

        targets = MAPPING.get(model.config.model_type)
        if not targets:
            raise EdgetuneError(f"no default LoRA targets for {model.config.model_type}; pass target_modules")
        return list(targets)

    def build(self, model: Any, embedding: nn.Module) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        targets = self._targets(model)
        shapes = [(m.in_features, m.out_features) for name, m in model.named_modules()
                  if isinstance(m, nn.Linear) and name.split(".")[-1] in targets]
        d = embedding.weight.shape[1]
        # loading: the rank the saved adapters have (saved_shapes), never one recomputed from the parameters
        self.rank_ = self.rank or getattr(self, "saved_rank_", None) or lora_rank(shapes, self.budget_tokens * d)
        config = LoraConfig(r=self.rank_, lora_alpha=self.lora_alpha or 2 * self.rank_, lora_dropout=self.lora_dropout,
                            target_modules=targets, bias="none")
        peft_model = get_peft_model(copy.deepcopy(model), config)
        return PromptedModel(peft_model.base_model.model, self.reader_)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.module_.parameters() if p.requires_grad], "lr": self.learning_rate("lr")}]
