"""The prompted model: a frozen model plus what an input-edge method changes in what it reads.

:class:`PromptedModel` embeds the prompt's ids through the frozen model's own embedding table, applies
:meth:`PromptedModel.transform` (per-token offsets: ADePT, DePT), prepends :meth:`PromptedModel.prompt`
(a soft prompt) and hands the result to the backend's :class:`~edgetune.backends.local.LabelReader`, the
same forward pass feature extraction uses. It knows nothing of how it is trained: the trainers in
:mod:`edgetune.methods.core.trainers` drive it (AdamW for gradient methods, CMA-ES for black-box ones).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch

from ...backends.local import LabelReader, input_embedding_of
from ...backends.precision import autocast_for
from ...errors import IncompatibleError
from .config import ParamError


class PromptedModel(torch.nn.Module):
    """The frozen ``model`` read through ``reader``; ``soft_prompt`` (m, d), when given, is prepended."""

    def __init__(self, frozen: Any, reader: LabelReader, soft_prompt: torch.Tensor | None = None,
                 train_prompt: bool = True) -> None:
        super().__init__()
        self.frozen = frozen
        self.reader = reader
        self.soft_prompt = None if soft_prompt is None else torch.nn.Parameter(soft_prompt, requires_grad=train_prompt)

    @property
    def kind(self) -> str:
        return self.reader.kind

    def prompt(self, batch_size: int) -> torch.Tensor | None:
        return None if self.soft_prompt is None else self.soft_prompt[None].expand(batch_size, -1, -1)

    def input_embedding(self) -> torch.nn.Module:
        """The embedding table the prompt's tokens go through (the encoder's, for seq2seq models)."""
        return input_embedding_of(self.frozen, self.kind)

    def transform(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token changes to the input embeddings (none here)."""
        return embeds

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings after the method's changes, and the matching attention mask."""
        embeds = self.transform(self.input_embedding()(input_ids), attention_mask)
        prompt = self.prompt(len(input_ids))
        if prompt is not None:
            embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
            ones = torch.ones(len(input_ids), prompt.shape[1], dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        return embeds, attention_mask

    #: share the soft prompt's keys/values across the batch on causal models (same logits, far less compute)
    share_prefix: bool = True

    def prefixes(self) -> torch.Tensor | None:
        """The distinct prompts of a batch, (p, m, d): one shared prompt by default (BBT scoring p candidates
        at once: p, each followed by its share of the rows)."""
        return self.prompt(1)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The forward pass, under autocast to the frozen body's format when it is half precision (trainable
        float32 parameters meet the bfloat16/float16 body there); logits come back in float32."""
        with autocast_for(self.frozen):
            out = super().__call__(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) else out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Label-word logits (b, C) at the label position."""
        if self.share_prefix and self.kind == "causal":
            prefix = self.prefixes()  # (p, m, d): the rows split evenly among p prompts
            if prefix is not None and prefix.shape[1] > 0 and len(input_ids) % prefix.shape[0] == 0:
                embeds = self.transform(self.input_embedding()(input_ids), attention_mask)
                return self.reader.with_prefix(self.frozen, prefix.to(embeds.dtype), embeds, attention_mask, position)
        embeds, mask = self.embed(input_ids, attention_mask)
        shift = embeds.shape[1] - input_ids.shape[1]
        logits, _ = self.reader(self.frozen, embeds, mask, position + shift)
        return logits


def sample_vocab_prompt(embedding: torch.nn.Module, tokens: int, seed: int) -> torch.Tensor:
    """A soft prompt initialised from the embeddings of randomly drawn vocabulary tokens (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    vocab = embedding.weight.shape[0]
    ids = torch.randint(0, vocab, (tokens,), generator=gen)
    return embed_ids(embedding, ids)


def embed_ids(embedding: torch.nn.Module, ids: torch.Tensor | list[int]) -> torch.Tensor:
    """The embedding table's vectors (as the model reads them, scaling included) for ``ids``, on the CPU."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    with torch.no_grad():
        return embedding(ids.to(embedding.weight.device)).detach().float().cpu().clone()


def text_prompt_ids(token_ids: list[int], tokens: int) -> list[int]:
    """``tokens`` ids from a text's ids, repeated or trimmed to length (the ADePT/DePT references' TEXT
    initialisation, after PEFT's ``PromptTuningInit.TEXT``)."""
    if not token_ids:
        raise ParamError("prompt_init='text': the task's template and label words have no tokens to start from")
    reps = -(-tokens // len(token_ids))
    return (token_ids * reps)[:tokens]


def embedding_scale(embedding: torch.nn.Module, rows: int | None = 8192) -> float:
    """Standard deviation of the input-embedding elements as the model reads them (Gemma-style
    ``embed_scale`` included): the scale a soft prompt's learning rate is measured against (over ``rows``
    evenly spaced rows of the table; None: the whole table, as BBT's projection reads it)."""
    with torch.no_grad():
        weight = embedding.weight.detach().float()
        if rows is not None:
            weight = weight[torch.linspace(0, len(weight) - 1, min(len(weight), rows)).long()]
        scale = getattr(embedding, "embed_scale", None)
        return float(weight.std()) * (float(scale) if scale is not None else 1.0)


def decoder_layers(model: Any, method: str, parameter: str) -> torch.nn.ModuleList:
    """The transformer blocks of a causal LM (``model.base_model.layers``: Llama, Gemma, Mistral, Qwen; ``.h``:
    GPT-2). Methods that act on every layer (deep prompts, prefixes) need them; any other architecture gets one
    line naming the method and its parameter."""
    base = getattr(model, "base_model", None)
    for attr in ("layers", "h"):
        layers = getattr(base, attr, None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers):
            return layers
    kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    raise IncompatibleError(f"{method}: {parameter} needs a causal LM whose blocks transformers lists as "
                            f"base_model.layers (Llama, Gemma, ...); {kind!r} has none")


@contextmanager
def layer_input_hooks(layers: torch.nn.ModuleList, change: Callable[[int, torch.Tensor], torch.Tensor]):
    """While active, block i reads ``change(i, hidden_states)`` instead of its input hidden states (forward
    pre-hooks: the model's own code runs unchanged)."""

    def hook(i: int):
        def pre(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (change(i, args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": change(i, kwargs["hidden_states"])}
        return pre

    handles = [layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def factor_rates(build: Callable[[dict[str, torch.Tensor]], torch.Tensor], factors: dict[str, torch.Tensor],
                 step: float) -> dict[str, float]:
    """Learning rates for the factors of a prompt built as a product (ACCEPT's codebook mixes, LAMP's U·Q·V).

    An AdamW step moves every element of a factor by about its rate, and through a product those moves add up.
    ``"auto"`` gives the *prompt* prompt tuning's per-element step (``step`` = ratio × embedding scale): a
    factor's gain is the root-mean-square prompt element of ``build`` with that factor all ones and the others
    at their absolute values (one step's moves all pointing the same way), and every factor gets ``step`` over
    the sum of the gains, so that the factors' moves together move the prompt by about ``step``
    (why this rule: benchmarks/results/README.md, 'Where the defaults come from')."""
    with torch.no_grad():
        absolute = {k: v.detach().abs() for k, v in factors.items()}
        gain = sum(float(build({**absolute, k: torch.ones_like(v)}).pow(2).mean().sqrt()) for k, v in absolute.items())
    return dict.fromkeys(factors, step / max(gain, 1e-12))
