"""The backend interface: a frozen model reached one query per prompt.

A backend turns examples + a template + label words into :class:`Features`: the label-word scores at
the label position (n x C; logits, or log-probabilities, which differ only by a per-row constant) and a
hidden representation (n x d). It batches length-sorted prompts, reads and writes the content-keyed
cache, counts the queries it really makes and shows a progress bar. It never knows which method asked.

**The contract.** What a method may ask of a backend is declared on :class:`Backend` and nothing else:

- every backend: :meth:`Backend.features` (one query per prompt, cached), :meth:`Backend.check_label_words`
  (single-token label words), :meth:`Backend.label_targets` (what ``features`` scores),
  :meth:`Backend.check_template`, ``identity``, ``name``, ``kind``, :meth:`Backend.settings`, ``usage``;
- in-process backends (``provides_weights``), for methods that run the model themselves:
  :meth:`Backend.torch_model` (the frozen module and its tokenizer), :meth:`Backend.input_embedding`,
  :meth:`Backend.prompt_ids` (token ids of one rendered prompt, within a window), :meth:`Backend.collate`
  (padded ids + attention mask + the label position) and :meth:`Backend.label_reader` (the one forward
  pass from input embeddings to label-word logits, which the backend's own feature extraction uses too).

A backend that cannot provide one of these says so with one clear :class:`NeedsWeightsError`.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..data.example import Example
from ..data.templates import Prompt, Template
from ..distributed import barrier, gather, world
from ..errors import EdgetuneError
from .cache import FeatureCache, content_key

if TYPE_CHECKING:
    from .local import LabelReader, TokenBatch


#: what :meth:`Backend.features` scores: single-token ids, or one token sequence per label
LabelTargets = list[int] | list[tuple[int, ...]]


class NeedsWeightsError(EdgetuneError):
    """The method needs the model's weights in this process, and this backend only answers queries."""


@dataclass
class Features:
    """What one query per prompt returns, for n prompts and C label words."""

    scores: np.ndarray  # (n, C) float32
    hidden: np.ndarray  # (n, d) float32
    queries: int = 0  # prompts actually sent to the model for this call (cache misses)
    cache_hits: int = 0
    seconds: float = 0.0  # wall time spent querying the model
    truncated: int = 0
    stats: dict[str, Any] = field(default_factory=dict)  # backend counters for this call (requests, retries, ...)
    #: prompts per input (multi-prompt features): scores are (n, views × C) and hidden (n, views × d), view by view
    views: int = 1

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, idx: Sequence[int]) -> Features:
        return Features(self.scores[list(idx)], self.hidden[list(idx)], views=self.views)

    @staticmethod
    def stack(parts: Sequence[Features]) -> Features:
        """The features of the same inputs under several prompts, side by side (``views`` = len(parts));
        query counts, cache hits and seconds add up."""
        if len(parts) == 1:
            return parts[0]
        return Features(np.concatenate([p.scores for p in parts], axis=1),
                        np.concatenate([p.hidden for p in parts], axis=1),
                        queries=sum(p.queries for p in parts), cache_hits=sum(p.cache_hits for p in parts),
                        seconds=sum(p.seconds for p in parts), truncated=sum(p.truncated for p in parts),
                        stats=Features.added_stats(parts), views=sum(p.views for p in parts))

    @staticmethod
    def added_stats(parts: Sequence[Features]) -> dict[str, Any]:
        """The backend counters of several calls, added up (keys in order of first appearance)."""
        stats: dict[str, Any] = {}
        for p in parts:
            for k, v in p.stats.items():
                stats[k] = stats.get(k, 0) + v
        return stats

    def view(self, i: int) -> Features:
        """The features of the ``i``-th prompt of multi-prompt features."""
        c, d = self.scores.shape[1] // self.views, self.hidden.shape[1] // self.views
        return Features(self.scores[:, i * c : (i + 1) * c], self.hidden[:, i * d : (i + 1) * d])


class Backend(ABC):
    """Base class. Subclasses implement :meth:`_encode` (tokenise one prompt) and :meth:`_run` (one
    batch of encoded prompts -> scores and hidden states), plus :attr:`identity` and :meth:`settings`."""

    kind: str = ""
    batch_size: int = 32
    #: whether :meth:`torch_model` and the rest of the in-process contract work on this backend
    provides_weights: bool = False

    def __init__(self, name: str, cache: FeatureCache | None, batch_size: int = 32, progress: bool = True) -> None:
        self.name = name
        self.cache = cache if cache is not None else FeatureCache(None)
        self.batch_size = batch_size
        self.progress = progress
        self.usage: dict[str, int] = {"queries": 0}  # running counters: queries, and per backend requests, tokens, ...
        self._warned_truncation = False

    @property
    def total_queries(self) -> int:
        """Model queries made so far by this backend (cache hits excluded)."""
        return self.usage.get("queries", 0)

    def _count_queries(self, n: int) -> None:
        self.usage["queries"] = self.usage.get("queries", 0) + n

    # -- to implement -------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the model's answers could change (weights, tokenizer)."""

    def settings(self) -> dict[str, Any]:
        """Backend settings that change answers (part of every cache key; saved with a fitted method)."""
        return {}

    @classmethod
    def options_from_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Constructor options that rebuild this kind of backend, by model name, with the answer-changing
        ``settings`` a saved method recorded (so a reloaded method reads the model as it was trained)."""
        return {}

    @abstractmethod
    def check_label_words(self, words: Sequence[str]) -> list[int]:
        """Token ids of the label words; raise :class:`LabelWordError` if one is not a single token."""

    def label_targets(self, words: Sequence[str]) -> LabelTargets:
        """What :meth:`features` scores: the label words' single token ids (the default, via
        :meth:`check_label_words`), or — on a backend that scores label names of several tokens — each
        word's token sequence as a tuple (then a score is the length-normalised log-probability of the
        whole sequence after the prompt)."""
        return self.check_label_words(words)

    def check_template(self, template: Template) -> None:  # noqa: B027 - optional hook
        """Raise if the template cannot be used with this kind of model."""

    @abstractmethod
    def _encode(self, prompt: Prompt, max_length: int | None = None) -> tuple[Any, int, bool]:
        """-> (encoded prompt, its length in tokens, whether its input was truncated)."""

    @abstractmethod
    def _run(self, batch: list[Any], label_ids: LabelTargets, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Score one batch -> (scores (b, C), hidden (b, d))."""

    # -- the in-process contract (see the module docstring) -----------------------------------------------
    def _no_weights(self) -> NeedsWeightsError:
        return NeedsWeightsError(f"backend {self.name!r} ({self.kind}) cannot provide the model's weights; "
                                 "input-side methods need an in-process model (--backend local)")

    def torch_model(self) -> tuple[Any, Any]:
        """The frozen ``torch`` model and its tokenizer (or encoder and its tokenizer)."""
        raise self._no_weights()

    def input_embedding(self, model: Any = None) -> Any:
        """The embedding table prompts are read through (the encoder's, for seq2seq), of ``model`` (default:
        this backend's; a method may pass its own copy, e.g. one with LoRA adapters)."""
        raise self._no_weights()

    @property
    def window(self) -> int:
        """The most tokens one prompt may have (in-process models)."""
        raise self._no_weights()

    def prompt_ids(self, prompt: Prompt, max_length: int | None = None) -> list[int]:
        """Token ids of one rendered prompt as the model reads it; input text is truncated (never the
        template) to fit ``max_length`` (default: the backend's window)."""
        raise self._no_weights()

    def collate(self, encoded: Sequence[list[int]]) -> TokenBatch:
        """Right-padded ids, attention mask and each row's label position (on the CPU)."""
        raise self._no_weights()

    def label_reader(self, label_ids: Sequence[int]) -> LabelReader:
        """The forward pass from input embeddings to the label words' logits at the label position."""
        raise self._no_weights()

    # -- shared machinery ---------------------------------------------------------------------------------
    def key(self, prompt: Prompt, words: Sequence[str]) -> str:
        return content_key(self.identity, self.kind, self.settings(), prompt.key(), list(words))

    def features(
        self,
        examples: Sequence[Example],
        template: Template | str,
        words: Sequence[str],
        description: str = "prompts",
    ) -> Features:
        """Scores and hidden states for every example; cached prompts cost no query."""
        template = Template(template) if isinstance(template, str) else template
        self.check_template(template)
        label_ids = self.label_targets(words)
        prompts = [template.render(ex) for ex in examples]
        keys = [self.key(p, words) for p in prompts]
        found = self.cache.get_many(keys)
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        seconds = 0.0
        truncated = 0
        stats: dict[str, Any] = {}
        if todo:
            start = time.perf_counter()
            rank, size = world()
            mine = todo[rank::size]  # under a launcher each process reads its share; all of them outside one
            encoded = []
            for k in mine:
                enc, length, was_cut = self._encode(prompts[first[k]])
                truncated += was_cut
                encoded.append((length, k, enc))
            if truncated and not self._warned_truncation:
                warnings.warn(
                    f"{truncated} prompt(s) were longer than {self.name}'s window; their input text was "
                    "truncated and the template kept whole", stacklevel=2)
                self._warned_truncation = True
            before = dict(self.usage)
            shard: list[tuple[str, np.ndarray, np.ndarray]] = []

            def save(rows: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
                if size == 1:
                    self.cache.put_many(rows)  # committed at once: an interrupted run keeps what it paid for
                else:
                    shard.extend(rows)
                for key, s, h in rows:
                    found[key] = (s, h)
                self._count_queries(len(rows))
                bar.advance(len(rows))

            with self._progress(len(mine), description) as bar:
                self._answer(encoded, label_ids, words, save)
            if size > 1:  # every process gets every row; the cache on disk is written by rank 0 alone
                everyone = gather(shard)
                for key, s, h in everyone:
                    found[key] = (s, h)
                if rank == 0 or self.cache.path is None:
                    self.cache.put_many(everyone)
                barrier()  # nobody reads the cache again before rank 0 has written: every process sees one state
            seconds = time.perf_counter() - start
            stats = {k: v - before.get(k, 0) for k, v in self.usage.items() if v - before.get(k, 0)}
        scores = np.stack([found[k][0] for k in keys]) if keys else np.zeros((0, len(words)), np.float32)
        hidden = np.stack([found[k][1] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        return Features(scores.astype(np.float32), hidden.astype(np.float32), queries=len(todo),
                        cache_hits=len(keys) - len(todo), seconds=seconds, truncated=truncated, stats=stats)

    def _answer(self, encoded: list[tuple[int, str, Any]], label_ids: LabelTargets, words: Sequence[str],
                save: Callable[[list[tuple[str, np.ndarray, np.ndarray]]], None]) -> None:
        """Answer every ``(length, key, encoded prompt)`` and hand rows to ``save`` as they arrive.

        The default runs length-sorted batches (little padding) through :meth:`_run`; a remote backend
        overrides this with concurrent requests.
        """
        encoded = sorted(encoded, key=lambda t: -t[0])
        for b in range(0, len(encoded), self.batch_size):
            chunk = encoded[b : b + self.batch_size]
            scores, hidden = self._run([c[2] for c in chunk], label_ids, words)
            save([(c[1], scores[i], hidden[i]) for i, c in enumerate(chunk)])

    def _progress(self, total: int, description: str) -> _Bar:
        return _Bar(total, f"{self.name}: {description}", enabled=self.progress)


class _Bar:
    """A rich progress bar that disappears when done (or does nothing when disabled)."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.description = description

    def __enter__(self) -> _Bar:
        if self.enabled:
            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeRemainingColumn(), transient=True)
            self._p.start()
            self._t = self._p.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self.enabled:
            self._p.advance(self._t, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._p.stop()


def suggest_single_token(words: Sequence[str], is_single) -> str:
    """A hint listing case variants of the words that are single tokens."""
    hints = []
    for w in words:
        for v in (w.lower(), w.capitalize(), w.upper()):
            if v != w and is_single(v):
                hints.append(f"{w!r} -> {v!r}")
                break
    return f" (single-token variants: {', '.join(hints)})" if hints else ""
