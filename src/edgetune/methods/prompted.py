"""The prompted model: a frozen model plus what an input-edge method changes in what it reads.

:class:`PromptedModel` embeds the prompt's ids through the frozen model's own embedding table, applies
:meth:`PromptedModel.transform` (per-token offsets: ADePT, DePT), prepends :meth:`PromptedModel.prompt`
(a soft prompt) and hands the result to the backend's :class:`~edgetune.backends.local.LabelReader`, the
same forward pass feature extraction uses. It knows nothing of how it is trained: the trainers in
:mod:`edgetune.methods.trainers` drive it (AdamW for gradient methods, CMA-ES for black-box ones).
"""

from __future__ import annotations

from typing import Any

import torch

from ..backends.local import LabelReader, input_embedding_of


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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Label-word logits (b, C) at the label position."""
        embeds, mask = self.embed(input_ids, attention_mask)
        shift = embeds.shape[1] - input_ids.shape[1]
        logits, _ = self.reader(self.frozen, embeds, mask, position + shift)
        return logits


def sample_vocab_prompt(embedding: torch.nn.Module, tokens: int, seed: int) -> torch.Tensor:
    """A soft prompt initialised from the embeddings of randomly drawn vocabulary tokens (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    vocab = embedding.weight.shape[0]
    ids = torch.randint(0, vocab, (tokens,), generator=gen)
    with torch.no_grad():
        return embedding(ids.to(embedding.weight.device)).detach().float().cpu().clone()
