"""In-process backend: a frozen ``transformers`` model run under ``torch.inference_mode``.

Where the label word is read, per backbone kind:

- ``causal``: the next-token logits at the last prompt token (the label word follows the prompt). Only
  the label words' rows of the output layer are computed (plus Gemma's logit soft-capping), since
  DecT needs nothing else; this matters for models whose output layer is larger than their body.
  Hidden = that position's final hidden state (or ``hidden_layer``).
- ``masked``: the MLM head's logits and the hidden state at the mask token.
- ``seq2seq``: the decoder's first step after the start token (after the ``<extra_id_0>`` sentinel for
  T5-style vocabularies); hidden = the decoder's hidden state there.

Scores are raw logits: they differ from log-probabilities by a per-prompt constant, which no method
here is sensitive to (every use normalises over the label words).

**Label names of any length** (causal models, feature extraction): when a label word is more than one
token (``"transfer money"``, a 150-intent task's names), each label is scored by the mean log-probability
of its tokens after the prompt. Still one query per prompt: the prompt is run once and its key/value cache
is shared by every label's continuation (all labels in one pass, as blocks of one sequence under a
block-causal mask), so a label costs its own tokens, not another prompt. Single-token words keep the fast
path above (the label words' rows of the output layer only). Input-edge methods train on single-token words.

The forward pass lives in one place, :class:`LabelReader`: input embeddings in, label-word logits (and the
hidden state) at the label position out. Feature extraction calls it on the embeddings of the prompt's
ids; input-edge methods call it on embeddings they have changed (soft prompts, offsets), so DecT and ADePT
can never score the same prompt differently.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.templates import Prompt, Template
from ..errors import LabelWordError, ModelError
from .base import Backend, LabelTargets, suggest_single_token
from .cache import FeatureCache
from .models import progress_bars, resolve_model
from .precision import ThreadChooser, dtype_name, resolve_dtype, torch_threads


def _model_class(kind: str):
    import transformers as tf

    return {"causal": tf.AutoModelForCausalLM, "masked": tf.AutoModelForMaskedLM,
            "seq2seq": tf.AutoModelForSeq2SeqLM}[kind]


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"``: the first CUDA GPU when there is one, else the CPU; otherwise as named (a clear
    error when a named CUDA device is absent, instead of torch's deep stack trace)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but torch sees no CUDA GPU here (use --device cpu)")
    return dev


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's bytes (for in-memory models without files)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def input_embedding_of(model: Any, kind: str) -> Any:
    """The embedding table a model reads its input through (the encoder's, for seq2seq models)."""
    if kind == "seq2seq":
        return model.get_encoder().get_input_embeddings()
    return model.get_input_embeddings()


@dataclass
class TokenBatch:
    """Right-padded prompts: ids (b, L), attention mask (b, L) and each row's label position (b,)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.position.to(device))


class LabelReader:
    """Label-word logits (b, C) and the hidden state (b, d) of a model fed input embeddings.

    Where the label is read, per kind: ``causal`` the last real position (only the label words' rows of
    the output layer are computed, plus any bias and Gemma's final-logit soft-capping); ``masked`` the
    mask position; ``seq2seq`` the decoder's step after ``decoder_prefix``. ``position`` is ignored for
    seq2seq. The same object serves feature extraction and every input-edge method.
    """

    def __init__(self, kind: str, label_ids: Sequence[int], decoder_prefix: Sequence[int] | None = None) -> None:
        self.kind = kind
        self.label_ids = list(label_ids)
        self.decoder_prefix = list(decoder_prefix) if decoder_prefix is not None else None

    def __call__(self, model: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor,
                 hidden_layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden_layer=None``: no hidden state wanted (training); -1: the last layer; k: layer k."""
        rows = torch.arange(len(inputs_embeds), device=inputs_embeds.device)
        every = hidden_layer is not None and (hidden_layer != -1 or self.kind != "causal")
        if self.kind == "causal":
            out = model.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   output_hidden_states=every)
            final = out.last_hidden_state[rows, position]
            logits = self._causal_head(model, final)
            if hidden_layer is None:
                return logits, None
            return logits, (out.hidden_states[hidden_layer][rows, position] if every else final)
        if self.kind == "masked":
            out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_hidden_states=every)
            logits = out.logits[rows, position][:, self.label_ids]
            return logits, (out.hidden_states[hidden_layer][rows, position] if every else None)
        prefix_ids = self.decoder_prefix or [0]
        dec = torch.tensor([prefix_ids] * len(inputs_embeds), device=inputs_embeds.device)
        out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, decoder_input_ids=dec,
                    output_hidden_states=every)
        logits = out.logits[:, -1, self.label_ids]
        return logits, (out.decoder_hidden_states[hidden_layer][:, -1] if every else None)

    def _causal_head(self, model: Any, final: torch.Tensor) -> torch.Tensor:
        """The label words' rows of the output layer (plus bias and Gemma's final-logit soft-capping)."""
        head = model.get_output_embeddings()
        logits = final @ head.weight[self.label_ids].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[self.label_ids]
        cap = getattr(model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def with_prefix(self, model: Any, prefix: torch.Tensor, inputs_embeds: torch.Tensor,
                    attention_mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Label-word logits of ``prefix`` (1, m, d) followed by each row of ``inputs_embeds`` (causal only).

        In a causal model the prefix's keys and values do not depend on what follows, so they are computed
        once and shared by the whole batch (gradients flow into the prefix through them): the same logits
        as prepending the prefix to every row, at the cost of one prefix instead of one per row. This is
        what makes soft-prompt training affordable on a CPU, where a 60-token prompt is most of every row.
        ``position`` indexes ``inputs_embeds`` (not shifted by the prefix).
        """
        cache = self.prefix_cache(model, prefix)
        return self.read_after(model, cache, prefix.shape[1], inputs_embeds, attention_mask, position)

    def prefix_cache(self, model: Any, prefix: torch.Tensor) -> Any:
        """The key/value cache of ``prefix`` (p, m, d) run through a causal model (p prefixes at once)."""
        if self.kind != "causal":
            raise ModelError("a shared prefix cache needs a causal model")
        base = model.base_model
        out = base(inputs_embeds=prefix, use_cache=True)
        return getattr(out, _cache_key(base))

    def read_after(self, model: Any, cache: Any, prefix_len: int, inputs_embeds: torch.Tensor,
                   attention_mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Label-word logits of each row of ``inputs_embeds`` read after a ``prefix_len``-token ``cache`` of p
        prefixes: rows ``[j·b/p, (j+1)·b/p)`` follow prefix j (one prefix: every row follows it)."""
        rows = torch.arange(len(inputs_embeds), device=inputs_embeds.device)
        base = model.base_model
        cache.batch_repeat_interleave(len(inputs_embeds) // cache.layers[0].keys.shape[0])
        ones = torch.ones(len(inputs_embeds), prefix_len, dtype=attention_mask.dtype, device=attention_mask.device)
        out = base(inputs_embeds=inputs_embeds, attention_mask=torch.cat([ones, attention_mask], dim=1),
                   use_cache=True, **{_cache_key(base): cache})
        return self._causal_head(model, out.last_hidden_state[rows, position])


def _cache_key(base: Any) -> str:
    """The keyword a model's forward takes its key/value cache under (``cache`` or ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class LocalBackend(Backend):
    """A frozen HF model in this process. Build it with :meth:`load` (by name) or :meth:`from_model`."""

    def __init__(self, model: Any, tokenizer: Any, kind: str, name: str, identity: str,
                 cache: FeatureCache | None = None, batch_size: int = 32, max_length: int | None = None,
                 hidden_layer: int = -1, progress: bool = True, device: str | None = None,
                 dtype: str | torch.dtype | None = None, threads: int | str | None = None) -> None:
        """``dtype``: the format the model runs in (``"auto"``: chosen for the machine, see
        :mod:`~edgetune.backends.precision`; ``None``: as the model was given). ``threads``: torch threads while
        extracting (``None``: torch's setting; ``"auto"``: chosen batch by batch from measured speed, see
        :class:`~edgetune.backends.precision.ThreadChooser`). A model placed by ``device_map`` stays put."""
        super().__init__(name, cache, batch_size, progress)
        if kind not in ("causal", "masked", "seq2seq"):
            raise ModelError(f"LocalBackend runs causal, masked or seq2seq models, not {kind!r}")
        if threads not in (None, "auto") and (not isinstance(threads, int) or threads < 1):
            raise ModelError(f"threads must be a whole number ≥ 1, 'auto' or None, not {threads!r}")
        self.kind = kind
        self.threads = threads
        self.thread_chooser = ThreadChooser() if threads == "auto" else None
        if getattr(model, "hf_device_map", None) and len(set(model.hf_device_map.values())) > 1:
            self.device = input_embedding_of(model, kind).weight.device  # dispatched over devices by Accelerate
            self.model = model.eval()
        else:
            self.device = resolve_device(device)
            self.model = model.to(self.device).eval()
        if dtype is not None:
            self.model = self.model.to(resolve_dtype(dtype, self.device))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self._identity = identity
        window = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        window = window or 512
        self.max_length = min(max_length or 1024, window)
        self.hidden_layer = hidden_layer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
            tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
        self._trailing_special = {i for i in (tokenizer.eos_token_id, tokenizer.sep_token_id) if i is not None}
        self._sentinel = None
        if kind != "causal":
            if tokenizer.mask_token is not None:
                self._mask_text = tokenizer.mask_token
            elif "<extra_id_0>" in tokenizer.get_vocab():
                self._mask_text = self._sentinel = "<extra_id_0>"
            else:
                raise ModelError(f"{name}: the tokenizer has no mask token or <extra_id_0> sentinel")
            self._mask_id = tokenizer.convert_tokens_to_ids(self._mask_text)

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, name: str, kind: str | None = None, cache: FeatureCache | None = None,
             cache_root: str | None = None, **kwargs: Any) -> LocalBackend:
        """Load a model by name in ``dtype`` (default ``"auto"``), extracting at ``threads`` (default ``"auto"``);
        ``device_map="auto"`` (or an Accelerate device map) spreads a model too large for one device over the GPUs and
        CPU memory there are."""
        from transformers import AutoTokenizer

        progress = kwargs.get("progress", True)
        resolved = resolve_model(name, kind, cache_root, progress=progress)
        if resolved.kind == "embedding":
            raise ModelError(f"{name} is a sentence-embedding model, not a language model with a head to prompt; "
                             "pass a language model (e.g. --model smollm2-135m), or use it with setfit")
        kwargs.setdefault("threads", "auto")
        device_map = kwargs.pop("device_map", None)
        if device_map is not None and kwargs.get("device") not in (None, "auto"):
            raise ModelError("give either device or device_map, not both")
        where = resolve_device(None if device_map is not None else kwargs.get("device"))
        dtype = resolve_dtype(kwargs.pop("dtype", "auto"), where, cache_root)
        try:
            with progress_bars(progress):
                tokenizer = AutoTokenizer.from_pretrained(resolved.path)
                model = _model_class(resolved.kind).from_pretrained(
                    resolved.path, dtype=dtype, use_safetensors=True,
                    **({"device_map": device_map} if device_map is not None else {}))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from None
        return cls(model, tokenizer, resolved.kind, name, resolved.identity, cache=cache, **kwargs)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, kind: str, name: str = "custom", **kwargs: Any) -> LocalBackend:
        """Wrap an already-built model (its identity is a fingerprint of its weights)."""
        return cls(model, tokenizer, kind, name, f"{name}:{weights_fingerprint(model)}", **kwargs)

    # -- Backend hooks ---------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dtype(self) -> torch.dtype:
        """The format the model's weights run in."""
        return self.input_embedding().weight.dtype

    def settings(self) -> dict[str, Any]:
        # float32 is left unnamed, so features extracted before formats were a choice keep their cache keys
        named = {} if self.dtype == torch.float32 else {"dtype": dtype_name(self.dtype)}
        return {"max_length": self.max_length, "hidden_layer": self.hidden_layer, "scores": "logits", **named}

    @classmethod
    def options_from_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """A reloaded method reads the model in the format it was fitted in."""
        return {"dtype": settings.get("dtype", "float32")}

    provides_weights = True

    def torch_model(self) -> tuple[Any, Any]:
        return self.model, self.tokenizer

    def input_embedding(self, model: Any = None) -> Any:
        return input_embedding_of(self.model if model is None else model, self.kind)

    @property
    def window(self) -> int:
        return self.max_length

    def prompt_ids(self, prompt: Prompt, max_length: int | None = None) -> list[int]:
        return self._encode(prompt, max_length)[0]

    @property
    def decoder_prefix(self) -> list[int] | None:
        """What the decoder reads before the label word (seq2seq): its start token, then the sentinel of
        T5-style vocabularies; ``None`` for other kinds."""
        if self.kind != "seq2seq":
            return None
        start = self.model.config.decoder_start_token_id
        return [self.pad_id if start is None else start] + ([self._mask_id] if self._sentinel else [])

    def collate(self, encoded: Sequence[list[int]]) -> TokenBatch:
        width = max(len(x) for x in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        # the label is read at the mask (masked LMs) or after the last real token (causal; unused for seq2seq)
        position = (input_ids == self._mask_id).int().argmax(1) if self.kind == "masked" else mask.sum(1) - 1
        return TokenBatch(input_ids, mask, position)

    def label_reader(self, label_ids: Sequence[int]) -> LabelReader:
        return LabelReader(self.kind, label_ids, self.decoder_prefix)

    def _word_ids(self, word: str) -> list[int]:
        return self.tokenizer.encode(" " + word, add_special_tokens=False)

    def check_label_words(self, words: Sequence[str]) -> list[int]:
        ids = []
        for w in words:
            toks = self._word_ids(w)
            if len(toks) != 1:
                pieces = self.tokenizer.convert_ids_to_tokens(toks)
                hint = suggest_single_token([w], lambda v: len(self._word_ids(v)) == 1)
                raise LabelWordError(
                    f"label word {w!r} is {len(toks)} tokens {pieces} for model {self.name}, not one; "
                    f"choose a single-token word with --label-words LABEL:WORD,...{hint}")
            ids.append(toks[0])
        if len(set(ids)) != len(ids):
            raise LabelWordError(f"label words {list(words)} map to the same token for model {self.name}")
        return ids

    #: how many prompts' label continuations run in one pass, as prompts x label positions / 16
    label_rows: int = 256
    #: the longest label name, in tokens, scored as a sequence
    max_label_tokens: int = 32

    def label_targets(self, words: Sequence[str]) -> LabelTargets:
        """Single-token words: their ids (the fast path). Otherwise, on a causal model, each word's token
        sequence (scored as a whole, see the module docstring); other kinds need single-token words."""
        seqs = [tuple(self._word_ids(w)) for w in words]
        if all(len(q) == 1 for q in seqs) or self.kind != "causal":
            return self.check_label_words(words)
        empty = [w for w, q in zip(words, seqs, strict=True) if not q]
        if empty:
            raise LabelWordError(f"label word(s) {empty} are empty for model {self.name}")
        long = [w for w, q in zip(words, seqs, strict=True) if len(q) > self.max_label_tokens]
        if long:
            raise LabelWordError(f"label word(s) {long} are longer than {self.max_label_tokens} tokens; shorten them")
        if len(set(seqs)) != len(seqs):
            same = [w for w, q in zip(words, seqs, strict=True) if seqs.count(q) > 1]
            raise LabelWordError(f"label words {same} are the same tokens for model {self.name}")
        return seqs

    def check_template(self, template: Template) -> None:
        if self.kind == "causal" and not template.mask_is_last:
            raise LabelWordError(
                f"template {template.text!r}: a causal LM predicts the label word after the prompt, so "
                "{mask} must come last")

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if self.kind == "causal":
            while ids and ids[-1] in self._trailing_special:
                ids = ids[:-1]
        return ids

    def _text(self, prompt: Prompt) -> str:
        if self.kind == "causal":
            return prompt.text_before
        after = prompt.text_after
        return prompt.text_before + " " + self._mask_text + after

    def _encode(self, prompt: Prompt, max_length: int | None = None) -> tuple[Any, int, bool]:
        window = self.max_length if max_length is None else min(max_length, self.max_length)
        ids = self._ids(self._text(prompt))
        cut = False
        for _ in range(8):
            excess = len(ids) - window
            if excess <= 0:
                break
            prompt = self._truncate(prompt, excess, window)
            ids = self._ids(self._text(prompt))
            cut = True
        else:
            raise ModelError(f"{self.name}: the template alone is longer than the window of {window} tokens")
        if self.kind == "masked" and self._mask_id not in ids:
            raise ModelError(f"{self.name}: the mask token was lost in tokenisation")
        return ids, len(ids), cut

    def _truncate(self, prompt: Prompt, excess: int, window: int) -> Prompt:
        """Shorten the longest input piece by ``excess`` tokens (plus a small margin)."""
        parts = [list(prompt.before), list(prompt.after)]
        best = None
        for side, seq in enumerate(parts):
            for i, (piece, is_input) in enumerate(seq):
                if is_input:
                    n = len(self.tokenizer.encode(piece, add_special_tokens=False))
                    if best is None or n > best[0]:
                        best = (n, side, i)
        if best is None or best[0] == 0:
            raise ModelError(f"{self.name}: the template alone is longer than the window of {window} tokens")
        n, side, i = best
        toks = self.tokenizer.encode(parts[side][i][0], add_special_tokens=False)
        keep = max(0, n - excess - 2)
        parts[side][i] = (self.tokenizer.decode(toks[:keep]).strip(), True)
        return Prompt(tuple(parts[0]), tuple(parts[1]))

    def _run(self, batch: list[Any], label_ids: LabelTargets, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        chooser = self.thread_chooser
        threads = chooser.next() if chooser is not None else self.threads
        start = time.perf_counter()
        with torch.inference_mode(), torch_threads(threads):  # type: ignore[arg-type]
            out = self._run_batch(batch, label_ids)
        if chooser is not None:
            chooser.record(int(threads), len(batch) * max(len(ids) for ids in batch), time.perf_counter() - start)
        return out

    def _run_batch(self, batch: list[Any], label_ids: LabelTargets) -> tuple[np.ndarray, np.ndarray]:
        if label_ids and isinstance(label_ids[0], tuple):
            return self._run_sequences(batch, label_ids)  # type: ignore[arg-type]
        tb = self.collate(batch).to(self.device)
        embeds = self.input_embedding()(tb.input_ids)
        logits, hidden = self.label_reader(label_ids)(self.model, embeds, tb.attention_mask, tb.position,
                                                      hidden_layer=self.hidden_layer)
        return logits.float().cpu().numpy(), hidden.float().cpu().numpy()

    def _run_sequences(self, batch: list[Any], seqs: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """Mean log-probability of each label's tokens after each prompt (causal).

        The prompts run once with a key/value cache. Then every label's tokens but its last are fed after it
        at once, as one sequence of label blocks with a block-causal mask: a label token sees the prompt and
        the earlier tokens of its own label only, with the positions it would have right after the prompt. So
        the cache is neither copied nor repeated per label, and each prompt costs its own tokens plus the
        labels' tokens. A label's first token is read from the prompt's last position, each later one from the
        position before it (the full vocabulary's log-softmax, Gemma's soft-capping included)."""
        dev = self.device
        flat = [(j, t) for j, q in enumerate(seqs) for t in range(len(q) - 1)]  # fed: label j's token t
        first_ids = torch.tensor([q[0] for q in seqs], device=dev)
        lengths = torch.tensor([len(q) for q in seqs], dtype=torch.float32, device=dev)
        base = self.model.base_model
        key = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        every = self.hidden_layer != -1
        if flat:
            cont = torch.tensor([seqs[j][t] for j, t in flat], device=dev)
            block = torch.tensor([j for j, _ in flat], device=dev)
            offset = torch.tensor([t for _, t in flat], device=dev)
            target = torch.tensor([seqs[j][t + 1] for j, t in flat], device=dev)
            sees = (block[:, None] == block[None, :]) & (offset[None, :] <= offset[:, None])  # (m, m)
        step = max(1, self.label_rows * 16 // max(len(flat), 1))  # prompts per pass: bounded label positions
        all_scores, all_hidden = [], []
        for b0 in range(0, len(batch), min(step, len(batch))):
            tb = self.collate(batch[b0 : b0 + step]).to(dev)
            n, rows = len(tb), torch.arange(len(tb), device=dev)
            out = base(inputs_embeds=self.input_embedding()(tb.input_ids), attention_mask=tb.attention_mask,
                       use_cache=True, output_hidden_states=every)
            final = out.last_hidden_state[rows, tb.position]
            hidden = out.hidden_states[self.hidden_layer][rows, tb.position] if every else final
            total = self._log_softmax(final)[:, first_ids]  # (n, k): each label's first token
            if flat:
                m, width = len(flat), tb.input_ids.shape[1]
                allowed = torch.cat([tb.attention_mask.bool()[:, None, :].expand(n, m, width),
                                     sees[None].expand(n, m, m)], dim=2)  # (n, m, width + m)
                dtype = final.dtype
                mask = torch.zeros(n, 1, m, width + m, dtype=dtype, device=dev)
                mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)  # additive: eager and SDPA alike
                positions = (tb.position + 1)[:, None] + offset[None, :]
                o2 = base(input_ids=cont.expand(n, m), attention_mask=mask, position_ids=positions,
                          use_cache=True, **{key: getattr(out, key)})
                logp = self._log_softmax(o2.last_hidden_state)  # (n, m, V)
                gained = logp.gather(2, target.expand(n, m)[..., None])[..., 0]  # (n, m)
                total = total.index_add(1, block, gained)
            all_scores.append((total / lengths).float().cpu().numpy())
            all_hidden.append(hidden.float().cpu().numpy())
        return np.concatenate(all_scores), np.concatenate(all_hidden)

    def _log_softmax(self, hidden: torch.Tensor) -> torch.Tensor:
        """Log-probabilities over the whole vocabulary from final hidden states (Gemma's soft-capping
        included); computed in chunks of rows so a large vocabulary stays within memory."""
        head = self.model.get_output_embeddings()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        flat = hidden.reshape(-1, hidden.shape[-1])
        out = []
        for c in range(0, len(flat), 64):
            logits = head(flat[c : c + 64]).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            out.append(torch.log_softmax(logits, dim=-1))
        return torch.cat(out).view(*hidden.shape[:-1], -1)
