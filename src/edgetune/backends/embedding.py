"""Embedding-model backend: what an embeddings-only API offers.

Hidden = the pooled, L2-normalised sentence embedding of the input text (``text`` and ``text_b`` joined
by a space; the template is not shown to the encoder). Score for label c = ``scale`` × the cosine similarity
between that embedding and the embedding of the label's *description*: the template with its input fields
emptied and ``{mask}`` replaced by the label word ("The topic of this sentence is sports"). Pooling and
normalisation are the ones the model folder declares, applied by ``sentence-transformers``.

Why a scale: methods read the scores as logits (DecT adds λ · log-softmax of them to its prototype scores;
calibrated zero-shot renormalises their softmax). Raw cosines differ by a few hundredths between labels, so
their softmax is nearly uniform and the zero-shot prior would carry almost no weight. ``scale=20`` is the
inverse temperature sentence-transformers trains such encoders with (``MultipleNegativesRankingLoss``); it
does not change any argmax. The scale is part of the backend's identity, so cached features and saved
decoders made with another scale are never mixed up with these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data.example import Example
from ..data.templates import Prompt, Template
from ..errors import ModelError
from .base import Backend, Features
from .cache import FeatureCache, content_key
from .models import progress_bars, resolve_model
from .precision import dtype_name, model_dtype, resolve_dtype, torch_threads


def describe_label(template: Template, word: str) -> str:
    """The template with inputs removed and the mask filled: a natural-language label description."""
    empty = Example(text="", text_b="", extra={f: "" for f in template.fields})
    prompt = template.render(empty)
    text = prompt.text_before + " " + word + prompt.text_after
    return re.sub(r"\s+", " ", text).strip()


class EmbeddingBackend(Backend):
    kind = "embedding"

    def __init__(self, model: Any, name: str, identity: str, cache: FeatureCache | None = None,
                 batch_size: int = 64, progress: bool = True, scale: float = 20.0,
                 threads: int | None = None) -> None:
        """``threads``: torch threads while embedding (``None``: torch's setting)."""
        super().__init__(name, cache, batch_size, progress)
        self.threads = threads
        if not scale > 0:
            raise ModelError(f"the embedding backend's scale must be positive, not {scale!r}")
        self.scale = float(scale)
        self.model = model
        self._identity = identity
        self._label_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._template: Template | None = None

    @classmethod
    def load(cls, name: str = "minilm-l6", cache: FeatureCache | None = None, cache_root: str | None = None,
             **kwargs: Any) -> EmbeddingBackend:
        resolved = resolve_model(name, "embedding", cache_root, progress=kwargs.get("progress", True))
        from sentence_transformers import SentenceTransformer

        from .local import resolve_device

        device = resolve_device(kwargs.pop("device", None))
        dtype = resolve_dtype(kwargs.pop("dtype", "auto"), device, cache_root)
        if kwargs.pop("device_map", None) is not None:
            raise ModelError("device_map is for language models; an embedding model runs on one device (--device)")
        try:
            with progress_bars(kwargs.get("progress", True)):
                model = SentenceTransformer(resolved.path, device=str(device), trust_remote_code=False).to(dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load embedding model {name!r}: {str(exc).splitlines()[0]}") from None
        return cls(model, name, resolved.identity, cache=cache, **kwargs)

    @property
    def identity(self) -> str:
        return f"{self._identity}|cos*{self.scale:g}"

    def settings(self) -> dict[str, Any]:
        dtype = model_dtype(self.model) if isinstance(self.model, torch.nn.Module) else torch.float32
        named = {} if dtype == torch.float32 else {"dtype": dtype_name(dtype)}  # float32 keeps older cache keys
        return {"scores": "cosine", "scale": self.scale, **named}

    @classmethod
    def options_from_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        scale = {"scale": settings["scale"]} if "scale" in settings else {}
        return {"dtype": settings.get("dtype", "float32"), **scale}

    def torch_model(self) -> tuple[Any, Any]:
        return self.model, self.model.tokenizer

    def check_label_words(self, words: Sequence[str]) -> list[int]:
        return list(range(len(words)))  # any text can be embedded

    def key(self, prompt: Prompt, words: Sequence[str]) -> str:
        descriptions = [describe_label(self._template, w) for w in words] if self._template else list(words)
        return content_key(self.identity, self.kind, prompt.key(), descriptions)

    def features(self, examples: Sequence[Example], template: Template | str, words: Sequence[str],
                 description: str = "prompts") -> Features:
        template = Template(template) if isinstance(template, str) else template
        self._template = template
        # The encoder sees the raw input, so the "prompt" is just the input fields.
        plain = Template("{text} {text_b} {mask}" if any(e.text_b for e in examples) else "{text} {mask}")
        try:
            return super().features(examples, plain, words, description)
        finally:
            self._template = None

    def _label_embeddings(self, descriptions: tuple[str, ...]) -> np.ndarray:
        if descriptions not in self._label_cache:
            self._label_cache[descriptions] = self._embed(list(descriptions))
            self._count_queries(len(descriptions))
        return self._label_cache[descriptions]

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, normalised in float32 (a half-precision model normalises only to ~1e-3)."""
        emb = np.asarray(self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                           normalize_embeddings=False, show_progress_bar=False), dtype=np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def _encode(self, prompt: Prompt, max_length: int | None = None) -> tuple[Any, int, bool]:
        text = re.sub(r"\s+", " ", prompt.text_before).strip()
        return text, len(text), False  # the encoder truncates to its own window

    def _run(self, batch: list[Any], label_ids: list[int], words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        assert self._template is not None
        labels = self._label_embeddings(tuple(describe_label(self._template, w) for w in words))
        with torch_threads(self.threads):
            emb = self._embed(batch)
        return (emb @ labels.T) * np.float32(self.scale), emb
