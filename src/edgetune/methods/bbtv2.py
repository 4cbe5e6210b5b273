"""BBTv2 (Sun et al., EMNLP 2022, "BBTv2: Towards a Gradient-Free Future with Large Language Models";
reference code txsun1997/Black-Box-Tuning, ``deepbbt.py``): a deep prompt searched without gradients.

A prompt of ``prompt_tokens`` positions sits before the input, and *every* transformer block gets its own
vector added to the hidden states at those positions: block i reads ``h + A_i z_i`` there (block 0: the
embeddings of the vocabulary tokens 1000, 1001, ... plus ``A_0 z_0``, as the reference's placeholder tokens).
Each z_i has ``intrinsic_dim`` numbers; each A_i is a fixed random projection drawn, as the reference, from a
normal distribution with mean 0 and std ``projection_scale · σ̂_i / (√intrinsic_dim · sigma)``, where σ̂_0 is
the std of the word-embedding table as the model reads it (Gemma's ``embed_scale`` included, as in p0) and σ̂_i
(i ≥ 1) the std of block i's input hidden states on the training prompts, clipped five times to mean ± 3 std
(the reference's outlier clipping; it measures them on the first candidate, here on the start, z = 0). The
search is divide and conquer: one CMA-ES per block, a round giving each block one generation while the others
stay at their best so far (:class:`~edgetune.methods.core.trainers.CMAESTrainer` with ``blocks``). Calls are
counted as BBT counts them (one candidate over the k-shot set); the reference budget is 8,000 calls, population
20, intrinsic dimension 500, 50 prompt tokens, cross-entropy over the label words, a dev check every 100 calls.

How the deep prompt reaches the model: the prompt positions are run first, through the model's own blocks
with a forward pre-hook adding A_i z_i to block i's input (:func:`~edgetune.methods.core.prompted.layer_input_hooks`);
their keys and values go into a transformers cache that every input row then reads after (a causal model's
prefix does not depend on what follows, so this equals prepending the prompt to each row). Several candidates
share one pass (``max_rows``), as BBT. Causal LMs only (the reference also covers RoBERTa, BERT, BART and T5
by editing their modelling code, which edgetune does not copy).

The projections are not stored (15 × 28,800 × 500 floats on SmolLM2 — 1.7 GB — the reference keeps them
all): each is regenerated from its seed when a block's candidate changes. What is saved is the result, the
per-block prompt vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..backends.local import LabelReader
from ..errors import IncompatibleError
from .configs.bbtv2 import BBTv2Config
from .core.config import ParamError
from .core.input_edge import ProjectedSearch
from .core.prompted import PromptedModel, decoder_layers, embedding_scale, layer_input_hooks
from .core.registry import register


class DeepPromptModel(PromptedModel):
    """A fixed prefix ``p0`` (m, d) whose positions get ``layer_prompts[i]`` added at block i's input.
    While ``row_prompts`` (p, L, m, d) is set, p prefixes are run and the rows split evenly among them."""

    row_prompts: torch.Tensor | None = None

    def __init__(self, frozen: Any, reader: LabelReader, p0: torch.Tensor, layers: int) -> None:
        super().__init__(frozen, reader, soft_prompt=p0, train_prompt=False)
        self.register_buffer("layer_prompts", torch.zeros(layers, *p0.shape))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        deltas = self.layer_prompts[None] if self.row_prompts is None else self.row_prompts
        prefix = self.soft_prompt[None].expand(len(deltas), -1, -1)
        blocks = decoder_layers(self.frozen, "bbtv2", "prompt_tokens (a prompt at every block)")
        with layer_input_hooks(blocks, lambda i, h: h + deltas[:, i].to(h.dtype)):
            cache = self.reader.prefix_cache(self.frozen, prefix)
        embeds = self.input_embedding()(input_ids)
        return self.reader.read_after(self.frozen, cache, prefix.shape[1], embeds, attention_mask, position)


def clipped_std(values: torch.Tensor, rounds: int = 5) -> float:
    """The std of ``values`` after clipping them ``rounds`` times to mean ± 3 std (the reference's rule)."""
    x = values.double().flatten()
    for _ in range(rounds):
        mu, sd = x.mean(), x.std()
        x = x.clamp(mu - 3 * sd, mu + 3 * sd)
    return float(x.std())


@register
class BBTv2(ProjectedSearch):
    """A deep prompt (every block) searched by divide-and-conquer CMA-ES (see the module docstring).

    Attributes
    ----------
    z_ : ndarray
        The chosen vector, blocks × intrinsic_dim.
    proj_std_ : list of float
        Each block's projection std.
    calls_ : int
        Calls made.
    module_ : torch.nn.Module
        The prompted model; the per-block prompts ``A_i z_i`` live in ``module_.layer_prompts``.
    """

    config = BBTv2Config

    @property
    def search_dim(self) -> int:
        return self.n_blocks_ * self.intrinsic_dim

    @property
    def search_blocks(self) -> int:
        return self.n_blocks_

    def build(self, model: Any, embedding: torch.nn.Module) -> torch.nn.Module:
        if self.kind_ != "causal":
            raise IncompatibleError(f"bbtv2: prompt_tokens (a prompt at every block) needs a causal LM here (it enters "
                                    f"through the key/value cache); this backend's model is {self.kind_}")
        self.n_blocks_ = len(decoder_layers(model, "bbtv2", "prompt_tokens (a prompt at every block)"))
        self.p0_ = self.initial_prompt(embedding, self.prompt_tokens, self.prompt_init)
        self.proj_std_ = [self.projection_scale * embedding_scale(embedding, rows=None)  # Gemma's embed_scale too
                          / (np.sqrt(self.intrinsic_dim) * self.sigma)]
        self._made: dict[int, tuple[bytes, torch.Tensor]] = {}
        return DeepPromptModel(model, self.reader_, self.p0_.clone(), self.n_blocks_)

    def _trainable_names(self) -> set[str]:
        return {"soft_prompt", "layer_prompts"}

    def saved_shapes(self, tensors: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
        d = self.saved_axis(tensors, "soft_prompt", 1)
        return {"soft_prompt": (self.prompt_tokens, d), "layer_prompts": (None, self.prompt_tokens, d)}

    def _train(self, ids: list[list[int]], y: torch.Tensor) -> dict[str, Any]:
        if self.budget < self.popsize * self.n_blocks_:
            raise ParamError(f"bbtv2: budget={self.budget} calls cannot give each of the model's {self.n_blocks_} "
                             f"blocks one generation of popsize {self.popsize} (needs >= "
                             f"{self.popsize * self.n_blocks_}); raise budget or lower popsize")
        return super()._train(ids, y)

    # -- the search ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _prepare_search(self, ids: list[list[int]], y: torch.Tensor) -> None:
        """Pre-batch the training set; measure each block's input hidden-state std on it (with the start
        prompt) for the projections of blocks 1..L-1."""
        super()._prepare_search(ids, y)
        device = next(self.module_.parameters()).device
        seen: list[list[torch.Tensor]] = [[] for _ in range(self.n_blocks_)]
        for batch, _ in self._batches:
            b = batch.to(device)
            embeds, mask = self.module_.embed(b.input_ids, b.attention_mask)
            out = self.frozen_.base_model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
            for i in range(1, self.n_blocks_):  # hidden_states[i]: block i's input
                seen[i].append(out.hidden_states[i][mask.bool()].float().cpu())
        self.proj_std_ = self.proj_std_[:1] + [
            self.projection_scale * clipped_std(torch.cat(seen[i])) / (np.sqrt(self.intrinsic_dim) * self.sigma)
            for i in range(1, self.n_blocks_)]

    def _projection(self, block: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + block)
        return torch.randn(self.p0_.numel(), self.intrinsic_dim, generator=gen) * self.proj_std_[block]

    def candidate_prompts(self, zs: list[np.ndarray]) -> torch.Tensor:
        """(p, L, m, d) per-block prompts ``A_i z_i`` of p candidates; a block whose z is the same in every
        candidate and as last time is not recomputed (a generation changes one block)."""
        z = torch.as_tensor(np.stack(zs), dtype=torch.float32).view(len(zs), self.n_blocks_, self.intrinsic_dim)
        out = torch.empty(len(zs), self.n_blocks_, self.p0_.numel())
        for i in range(self.n_blocks_):
            col = z[:, i]
            same = bool((col == col[0]).all())
            key = col[0].numpy().tobytes()
            if same and i in self._made and self._made[i][0] == key:
                out[:, i] = self._made[i][1]
                continue
            made = (self._projection(i) @ col.T).T
            out[:, i] = made
            if same:
                self._made[i] = (key, made[0].clone())
        return out.view(len(zs), self.n_blocks_, *self.p0_.shape)

    def set_candidate(self, z: np.ndarray) -> None:
        with torch.no_grad():
            self.module_.layer_prompts.copy_(self.candidate_prompts([z])[0])
