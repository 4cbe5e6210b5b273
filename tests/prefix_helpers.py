"""What a deep prompt (BBTv2) or a gated prefix (APT) must equal, shared by the tiny-model and SmolLM2 tests."""

from __future__ import annotations

import torch

from edgetune.methods.core.prompted import PromptedModel, embed_ids, text_prompt_ids


def scores(module, method, texts):
    """Label-word logits of ``texts`` through ``module`` (one batch, no gradients)."""
    batch = method.backend.collate(method.encode(texts))
    with torch.no_grad():
        return module(batch.input_ids, batch.attention_mask, batch.position)


def first_block_only(deep, delta: torch.Tensor) -> PromptedModel:
    """Give a BBTv2 model only a first-block vector ``delta``; return the plain prefix ``p0 + delta`` it must equal
    (prepended to every row: nothing shared)."""
    module = deep.module_
    with torch.no_grad():
        module.layer_prompts.zero_()
        module.layer_prompts[0] = delta
    plain = PromptedModel(module.frozen, deep.reader_, soft_prompt=module.soft_prompt.detach() + delta)
    plain.share_prefix = False
    return plain


def gates_at_one(apt, tokens: int) -> PromptedModel:
    """Reset an APT model's prefix to its text start and its gates to one (2 · σ(0)); return the model with the
    text prompt prepended that it must equal."""
    module = apt.module_
    keys, values = apt._text_prefix(module.frozen, module.input_embedding(), tokens)
    with torch.no_grad():
        module.keys.copy_(keys)
        module.values.copy_(values)
        for gate in module.gates:
            gate.weight.zero_()
            gate.bias.zero_()
        module.scales.fill_(2.0)
    ids = text_prompt_ids(apt.tokenizer_(apt.init_text(), add_special_tokens=False)["input_ids"], tokens)
    return PromptedModel(module.frozen, apt.reader_, soft_prompt=embed_ids(module.input_embedding(), ids))
