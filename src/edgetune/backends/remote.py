"""Remote backend: a frozen model behind a serving engine (llama.cpp, vLLM, TGI, Ollama, OpenAI's API).

This is the setting DecT was built for: no weights, no gradients, one query per sample.

**What one query costs.** One prompt = at most two HTTP requests, both on the exact prompt text that the
in-process backend would feed (the text before ``{mask}``):

1. ``POST /v1/completions`` with ``max_tokens=1, temperature=0, logprobs=N`` (``top_logprobs``, default 20,
   OpenAI's own cap; llama.cpp accepts hundreds). The label-word scores are the log-probabilities of the
   tokens ``" " + word`` among the top-N next tokens. Cost: the prompt's tokens + 1 generated token.
2. ``POST /v1/embeddings`` on the same text, for the hidden representation. llama.cpp's server returns
   one vector per prompt token: the last one is used (the state at the position that predicts the label
   word, as in-process). A server that returns one pooled vector per input gets that vector. Cost: the
   prompt's tokens again. ``hidden=False`` skips this request (scores only; zero-shot and calibrated
   methods need nothing else).

Token counts come from the server's ``usage`` fields and are summed in :attr:`Backend.usage`
(``requests``, ``retries``, ``failures``, ``prompt_tokens``, ``completion_tokens``, ``floored``).

**A label word outside the top N.** The server only says that its log-probability is below the lowest
one returned. Its score is set to a *floor*: that lowest returned log-probability (an upper bound of the
true value) unless a fixed ``floor`` is given. Every floored score is counted (``usage["floored"]`` and
per word in :attr:`floored_words`) and a warning says how many were floored; it is never a silent zero.
Raise ``top_logprobs`` where the server allows it to make floors rarer.

**Exact scores through a capped API** (``exact="auto"``, the default). When a label word is missing from the
top N, the backend tries to learn its exact log-probability with ``logit_bias`` on the word's token (ids from
the server's tokenize endpoint: ``/extras/tokenize`` of llama-cpp-python's server or ``/tokenize`` of
llama.cpp's). Once per backend it probes how the server treats a bias:

- *sampling only* (llama-cpp-python 0.3.x): the bias makes the biased word the generated token, and the server
  reports that token's **unbiased** log-probability beside the top N; one extra request per missing word
  gives its exact score;
- *reflected* (log-probabilities computed after the bias): one extra request per prompt with the same bias on
  every label word lifts them all into the top N, and the differences between them — all that the methods use
  (every score is normalised over the label words) — are exact.

A server without a tokenize endpoint, one that ignores or refuses ``logit_bias`` (an HTTP 4xx answer to the probe:
the warning quotes it), or a label word of several tokens falls back to the floor. ``usage`` counts ``exact``
(scores found in the top N or recovered) and ``recovered`` (by a bias request) beside ``floored``; ``echo`` +
``logprobs`` scoring was tried on llama-cpp-python 0.3.36 and returns wrong prompt log-probabilities there, so
it is not used (see ``benchmarks/results/README.md``).

**Engines** (``engine=``; each shape follows the engine's source, cited in tests/http_helpers.py):

- ``"completions"`` (default): ``/v1/completions`` as above — llama.cpp, llama-cpp-python, vLLM (tokenize with
  ``prompt``; its default ``raw_logprobs`` mode reports unbiased log-probabilities, so recovery works as
  *sampling only*; ``--max-logprobs`` caps N at 20 by default) and OpenAI's legacy completion models (N ≤ 5,
  enforced when ``base_url`` is api.openai.com).
- ``"chat"``: ``/v1/chat/completions`` with ``logprobs=true, top_logprobs=N`` (OpenAI: N ≤ 20); the prompt is
  the user's message and the answer's first token is scored, as ``" " + word`` and ``word`` together. OpenAI
  serves no embeddings of its chat models: give ``embeddings_url``/``embeddings_model`` or ``hidden=False``.
- ``"tgi"``: Hugging Face text-generation-inference's own ``/generate`` (``details``, ``top_n_tokens``; the
  launcher's ``--max-top-n-tokens`` caps N, 5 by default; its ``/v1/completions`` returns no log-probabilities
  and it refuses an OpenAI ``logit_bias``). A label word outside the top N is recovered exactly from the prompt's
  own log-probabilities (``decoder_input_details`` on the prompt + the word: one request per missing word). TGI
  serves no embeddings: ``embeddings_url`` names a text-embeddings-inference server, or ``hidden=False``.
- ``"ollama"``: Ollama's ``/api/generate`` on the raw prompt with ``logprobs``, ``top_logprobs`` ≤ 20 (its
  ``/v1/completions`` drops log-probabilities); Ollama ignores ``logit_bias`` and has no tokenize endpoint, so a
  word outside the top 20 is floored (counted and warned as always).

**Normalised embeddings.** vLLM, text-embeddings-inference, Ollama and OpenAI return unit-length vectors by
default, llama.cpp the raw hidden state. Each unit-length vector is counted in ``usage["normalised"]`` (so a run
says which it got). Nothing else needs to change: the methods standardise every feature over the training set
(DecT, probes) or compare directions (prototypes), and a vector's length carries little once standardised; the
cache key holds the server and model, so normalised and raw vectors are never mixed.

**Fault tolerance.** Requests run concurrently (``concurrency`` in flight, asyncio) under an optional
rate limit (requests per second), each with a timeout (``timeout``; connecting has its own, shorter
``connect_timeout``). Timeouts, dropped connections, 429 and 5xx answers are retried up to ``max_retries``
times with exponential backoff and jitter (``Retry-After`` is honoured). A server that cannot be reached
fails fast: a request that cannot connect (refused, unknown host, no route, connect timeout), and any
timeout before the server has answered once in this run, is retried at most ``connect_retries`` times, so a
wrong ``base_url`` or a stopped server fails in seconds and a server that accepts connections but never
answers fails after ``connect_retries + 1`` timeouts. Every retry is announced by one line on the
``edgetune.remote`` logger (shown on stderr when logging is not configured; each distinct line once per
call). Other errors (bad request, authentication, unknown model) fail at once with the server's message,
and an answer that is not JSON (e.g. an HTML page from a proxy or a wrong URL) fails at once naming the
URL. A prompt that still fails stops the run with a one-line :class:`RemoteError`; every answer that
arrived before is already in the cache, committed as it arrived, so the rerun pays only for what is missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import numbers
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..data.templates import Prompt, Template
from ..errors import LabelWordError, ModelError
from .base import Backend
from .cache import FeatureCache

log = logging.getLogger("edgetune.remote")

#: the request shapes a server is asked in (see "Engines" in the module docstring)
ENGINES = ("completions", "chat", "tgi", "ollama")
#: next-token log-probabilities an engine returns by default; ``top_logprobs=None`` asks for this many
DEFAULT_TOP = {"completions": 20, "chat": 20, "tgi": 5, "ollama": 20}
#: hard caps (more is refused with HTTP 400): OpenAI's legacy completions 5 and chat completions 20
#: (openai-python's completion_create_params.py / chat/completion_create_params.py), Ollama 20 (server/routes.go)
HARD_CAP = {"ollama": 20}
OPENAI_CAP = {"completions": 5, "chat": 20}


class RemoteError(ModelError):
    """The server could not be reached, or kept failing, or refused a request."""


class RefusedError(RemoteError):
    """The server refused a request with a non-retryable HTTP status (``status``, the server's ``reason``)."""

    def __init__(self, message: str, status: int, reason: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


class _RateLimiter:
    """At most ``rate`` request starts per second (evenly spaced), shared by all concurrent tasks."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0 if not rate else 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class OpenAIBackend(Backend):
    """A model reached through an OpenAI-compatible HTTP API with the ``openai`` client.

    Args:
        model: the server's model name (``/v1/models``); part of the cache key.
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        api_key: sent as a bearer token (default: ``$OPENAI_API_KEY``, or a placeholder for local servers).
        top_logprobs: N next-token log-probabilities asked for (default: the engine's default cap, 5 for TGI and
            OpenAI's legacy completions, else 20); more than a hard cap (OpenAI, Ollama) is a one-line error.
        hidden: also query the embeddings endpoint for the hidden representation.
        floor: fixed score for a label word outside the top N (default: the lowest returned log-prob).
        concurrency: requests in flight at once.
        rate_limit: request starts per second (``None``: unlimited).
        timeout: seconds per request before it counts as failed and is retried.
        max_retries: retries per request after the first attempt.
        backoff, max_backoff: the first retry waits about ``backoff`` s, doubling up to ``max_backoff``.
        connect_timeout: seconds to establish a connection (at most ``timeout``).
        connect_retries: retries (at most ``max_retries``) of a request that cannot connect, or that times
            out before the server has answered anything in this run: an absent server fails in seconds.
        identity: cache identity (default ``openai:<model>``); change it when the server's weights change
            under the same name.
        embeddings_url, embeddings_model: where the hidden representation comes from when the completions
            server does not serve embeddings of the same model (vLLM serves completions and embeddings from
            separate instances): another OpenAI-compatible base URL and its model name (default: ``base_url``
            and ``model``). Part of the cache key when given.
        engine: the request shape (see "Engines" in the module docstring): ``"completions"`` (any
            OpenAI-compatible ``/v1/completions``: llama.cpp, vLLM, OpenAI's legacy models), ``"chat"``,
            ``"tgi"`` or ``"ollama"``. Part of the cache key unless ``"completions"``.
    """

    kind = "openai"

    def __init__(self, model: str, base_url: str, api_key: str | None = None, cache: FeatureCache | None = None,
                 top_logprobs: int | None = None, hidden: bool = True, floor: float | None = None, concurrency: int = 8,
                 rate_limit: float | None = None, timeout: float = 30.0, max_retries: int = 6,
                 backoff: float = 0.5, max_backoff: float = 20.0, identity: str | None = None,
                 exact: str = "auto", progress: bool = True, batch_size: int = 32, connect_timeout: float = 5.0,
                 connect_retries: int = 2, embeddings_url: str | None = None,
                 embeddings_model: str | None = None, engine: str = "completions") -> None:
        super().__init__(model, cache, batch_size, progress)
        if engine not in ENGINES:
            raise ModelError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.engine = engine
        cap = OPENAI_CAP[engine] if "api.openai.com" in base_url and engine in OPENAI_CAP else HARD_CAP.get(engine)
        if top_logprobs is None:
            top_logprobs = min(DEFAULT_TOP[engine], cap or DEFAULT_TOP[engine])
        _check_number("top_logprobs", top_logprobs, 1, whole=True)
        if cap is not None and top_logprobs > cap:
            raise ModelError(f"top_logprobs={top_logprobs}: {base_url} ({engine}) returns at most {cap} "
                             "log-probabilities per token and refuses more")
        if engine == "tgi" and hidden and not embeddings_url:
            raise ModelError("text-generation-inference serves no embeddings: pass embeddings_url (e.g. a "
                             "text-embeddings-inference server's /v1) or hidden=False (label-word scores only)")
        _check_number("concurrency", concurrency, 1, whole=True)
        _check_number("max_retries", max_retries, 0, whole=True)
        _check_number("connect_retries", connect_retries, 0, whole=True)
        _check_number("timeout", timeout, 0, above=True)
        _check_number("connect_timeout", connect_timeout, 0, above=True)
        if rate_limit is not None:
            _check_number("rate_limit", rate_limit, 0, above=True)
        _check_number("backoff", backoff, 0)
        _check_number("max_backoff", max_backoff, 0)
        if exact not in ("auto", "off"):
            raise ModelError(f"exact must be 'auto' (logit_bias where the server allows it) or 'off', not {exact!r}")
        self.exact = exact
        self.bias_mode: str | None = None  # after the probe: "sample", "reflect", "none" or "refused"
        self.bias_refusal = ""  # the server's answer when it refused a logit_bias request
        self._token_ids: dict[str, int | None] = {}
        self._probe_lock: asyncio.Lock | None = None
        self.model_name = model
        self.base_url = base_url.rstrip("/")
        self.embeddings_url = embeddings_url.rstrip("/") if embeddings_url else None
        self.embeddings_model = embeddings_model
        self.api_key = api_key
        self.top_logprobs = top_logprobs
        self.hidden = hidden
        self.floor = floor
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.connect_retries = connect_retries
        self._answered = False  # whether the server has answered (any HTTP status) in the current run
        self._announced: set[str] = set()  # retry lines already shown in the current run
        self._identity = identity or f"openai:{model}"
        self.floored_words: Counter[str] = Counter()
        self.usage.update(requests=0, retries=0, failures=0, prompt_tokens=0, completion_tokens=0, floored=0,
                          exact=0, recovered=0, normalised=0)

    # -- Backend hooks ---------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        return self._identity

    def settings(self) -> dict[str, Any]:
        # a separate embeddings server is named only when given, so earlier cache keys stay valid
        elsewhere = {k: v for k, v in (("embeddings_url", self.embeddings_url),
                                       ("embeddings_model", self.embeddings_model)) if v}
        engine = {"engine": self.engine} if self.engine != "completions" else {}
        return {"top_logprobs": self.top_logprobs, "hidden": self.hidden, "floor": self.floor,
                "scores": "logprobs", "exact": self.exact, **elsewhere, **engine}

    @classmethod
    def options_from_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        return {k: settings[k] for k in ("top_logprobs", "hidden", "floor", "exact", "embeddings_url",
                                         "embeddings_model", "engine") if k in settings}

    def check_label_words(self, words: Sequence[str]) -> list[int]:
        """The server cannot tokenise for us: words are matched as the token text ``" " + word`` in the
        returned top log-probabilities (a multi-token word is never found and is floored, counted)."""
        if len({w.strip() for w in words}) != len(words):
            raise LabelWordError(f"label words {list(words)} are not distinct")
        bad = [w for w in words if not w.strip() or " " in w.strip()]
        if bad:
            raise LabelWordError(f"label words {bad} must be single words (one token each)")
        return list(range(len(words)))

    def check_template(self, template: Template) -> None:
        if not template.mask_is_last:
            raise LabelWordError(f"template {template.text!r}: a completion API predicts the word after the "
                                 "prompt, so {mask} must come last")

    def _encode(self, prompt: Prompt, max_length: int | None = None) -> tuple[Any, int, bool]:
        text = prompt.text_before
        return text, len(text), False  # the server truncates nothing; too long a prompt fails clearly

    def _run(self, batch: list[Any], label_ids: list[int], words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("a remote backend answers through _answer (concurrent requests)")

    # -- concurrent querying ---------------------------------------------------------------------------
    def _answer(self, encoded: list[tuple[int, str, Any]], label_ids: list[int], words: Sequence[str],
                save: Callable[[list[tuple[str, np.ndarray, np.ndarray]]], None]) -> None:
        floored_before, words_before = self.usage["floored"], Counter(self.floored_words)
        coro = self._answer_all(encoded, list(words), save)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(coro)
        else:  # called from inside an event loop (e.g. Jupyter): run ours in a worker thread
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, coro).result()
        floored = self.usage["floored"] - floored_before
        if floored:
            why = {"none": "; Ollama offers no exact way (logit_bias is ignored, no prompt log-probabilities)"
                   if self.engine == "ollama" else
                   "; the server offers no exact way (no tokenize endpoint, or logit_bias ignored)",
                   "refused": f"; the server refused logit_bias ({self.bias_refusal})",
                   None: ""}.get(self.bias_mode, "; logit_bias could not recover them (words of several tokens?)")
            warnings.warn(
                f"{floored} label-word score(s) over {len(encoded)} prompt(s) were not among the server's top "
                f"{self.top_logprobs} log-probabilities and got the floor value (by word: "
                f"{dict(self.floored_words - words_before)}){why}; raise top_logprobs if the server allows",
                stacklevel=3)

    async def _answer_all(self, encoded: list[tuple[int, str, Any]], words: list[str],
                          save: Callable[[list[tuple[str, np.ndarray, np.ndarray]]], None]) -> None:
        from openai import AsyncOpenAI, Timeout

        client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "sk-no-key-needed", max_retries=0,
                             timeout=Timeout(self.timeout, connect=min(self.timeout, self.connect_timeout)))
        embedder = client if not self.embeddings_url else AsyncOpenAI(
            base_url=self.embeddings_url, api_key=self.api_key or "sk-no-key-needed", max_retries=0,
            timeout=Timeout(self.timeout, connect=min(self.timeout, self.connect_timeout)))
        limiter = _RateLimiter(self.rate_limit)
        slots = asyncio.Semaphore(self.concurrency)
        self._probe_lock = None  # made in this event loop when first needed
        self._answered, self._announced = False, set()

        async def one(key: str, text: str) -> None:
            async with slots:
                scores = await self._scores(client, limiter, text, words)
                hidden = (await self._hidden(embedder, limiter, text)) if self.hidden else np.zeros(1, np.float32)
            save([(key, scores, hidden)])

        tasks = [asyncio.ensure_future(one(k, t)) for _, k, t in encoded]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            await client.close()
            if embedder is not client:
                await embedder.close()

    async def _call(self, what: str, limiter: _RateLimiter, fn: Callable[[], Any]) -> Any:
        """One request, retried (see "Fault tolerance" in the module docstring): timeouts, dropped connections,
        429 and 5xx up to ``max_retries`` times; a request that cannot reach the server, or times out before the
        server has answered in this run, at most ``connect_retries`` times. One log line per retry."""
        import openai

        last: Exception | None = None
        attempt = budget = 0
        while True:
            await limiter.wait()
            self.usage["requests"] += 1
            try:
                answer = await fn()
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                last = exc  # APIConnectionError includes APITimeoutError
            except openai.APIStatusError as exc:
                self._answered = True
                if exc.status_code not in (408, 409) and exc.status_code < 500:
                    self.usage["failures"] += 1
                    raise RefusedError(f"{self.base_url}: {what} request refused with HTTP {exc.status_code}: "
                                       f"{_message(exc)}", exc.status_code, _message(exc)) from None
                last = exc
            except json.JSONDecodeError as exc:  # labelled JSON, but is not
                self.usage["failures"] += 1
                raise self._not_json(what, exc.doc) from None
            else:
                self._answered = True
                if isinstance(answer, str):  # the openai client's answer to a body that is not JSON
                    self.usage["failures"] += 1
                    raise self._not_json(what, answer)
                return answer
            self.usage["failures"] += 1
            if isinstance(last, openai.APIStatusError):
                self._answered = True
            unreachable = isinstance(last, openai.APIConnectionError) and (
                _cannot_connect(last) or not self._answered)
            budget = min(self.max_retries, self.connect_retries) if unreachable else self.max_retries
            if attempt >= budget:
                break
            attempt += 1
            self.usage["retries"] += 1
            line = (f"{self.base_url}: {what} request failed ({self._describe(last)}); "
                    f"retry {attempt} of {budget}")
            if line not in self._announced:  # concurrent requests failing alike: one line
                self._announced.add(line)
                log.warning(line)
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)  # jitter: no retry storms in lockstep
            await asyncio.sleep(max(delay, _retry_after(last) or 0.0))
        hint = ("Is the server running, and is the URL right?" if isinstance(last, openai.APIConnectionError)
                else "The server keeps failing.")
        times = f"{attempt + 1} times" if attempt else "once"
        raise RemoteError(
            f"{self.base_url}: {what} request failed {times}; last error: {self._describe(last)}. "
            f"{hint} Answers received so far are cached; rerunning resumes from there.")

    def _describe(self, exc: Exception | None) -> str:
        """A failed request in a few words: the innermost cause of a connection error, the timeout that ran
        out, or the HTTP status and the server's message."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            if _cannot_connect(exc):
                return f"could not connect within {min(self.timeout, self.connect_timeout):g} s"
            return f"no answer within {self.timeout:g} s"
        if isinstance(exc, openai.APIConnectionError):
            # e.g. APIConnectionError <- ConnectError <- OSError <- ConnectionRefusedError: the system's own
            # error (one with an errno) says most; else the HTTP library's
            chain: list[BaseException] = []
            inner: BaseException | None = exc.__cause__
            while inner is not None and len(chain) < 8:
                chain.append(inner)
                inner = inner.__cause__ or inner.__context__
            cause = next((e for e in chain if getattr(e, "errno", None) is not None), chain[0] if chain else None)
            return f"{type(cause).__name__}: {_message(cause)}" if cause is not None else _message(exc)
        if isinstance(exc, openai.APIStatusError):
            return f"HTTP {exc.status_code}: {_message(exc)}"
        return f"{type(exc).__name__}: {_message(exc)}"

    def _not_json(self, what: str, body: str) -> RemoteError:
        sample = " ".join(str(body).split())[:80]
        return RemoteError(f"{self.base_url}: the {what} answer was not JSON ({sample!r}); is this the URL of an "
                           "OpenAI-compatible API (usually ending in /v1)?")

    async def _top(self, client: Any, limiter: _RateLimiter, text: str, n: int,
                   bias: dict[str, int] | None = None) -> tuple[dict[str, float], str]:
        """The top-``n`` next-token log-probabilities (token text → log-probability; the generated token is
        among them) and the generated token after ``text``, in the engine's request shape."""
        extra = {"logit_bias": bias} if bias else {}
        top: Any = None
        generated: Any = ""
        if self.engine == "completions":
            resp = await self._call("completion", limiter, lambda: client.completions.create(
                model=self.model_name, prompt=text, max_tokens=1, temperature=0.0, logprobs=n, **extra))
            self._count_usage(resp)
            try:
                top = resp.choices[0].logprobs.top_logprobs[0]
                generated = getattr(resp.choices[0], "text", "")
            except (AttributeError, IndexError, TypeError):
                top = None
        elif self.engine == "chat":  # the prompt is the user's message; the answer's first token is scored
            resp = await self._call("chat completion", limiter, lambda: client.chat.completions.create(
                model=self.model_name, messages=[{"role": "user", "content": text}], max_tokens=1, temperature=0.0,
                logprobs=True, top_logprobs=n, **extra))
            self._count_usage(resp)
            try:
                first = resp.choices[0].logprobs.content[0]
                top = {t.token: t.logprob for t in first.top_logprobs}
                top.setdefault(first.token, first.logprob)
                generated = first.token
            except (AttributeError, IndexError, TypeError):
                top = None
        elif self.engine == "tgi":  # text-generation-inference's own /generate (its /v1 routes return none)
            answer = await self._post("generate", limiter, client, "/generate", {"inputs": text, "parameters": {
                "max_new_tokens": 1, "details": True, "top_n_tokens": n, "do_sample": False}})
            try:
                details = answer["details"]
                top = {t["text"]: t["logprob"] for t in details["top_tokens"][0]}
                generated = details["tokens"][0]["text"]
                top.setdefault(generated, details["tokens"][0]["logprob"])
            except (KeyError, IndexError, TypeError):
                top = None
        else:  # Ollama's /api/generate on the raw prompt (its /v1/completions drops log-probabilities)
            answer = await self._post("generate", limiter, client, "/api/generate", {
                "model": self.model_name, "prompt": text, "raw": True, "stream": False, "logprobs": True,
                "top_logprobs": n, "options": {"num_predict": 1, "temperature": 0}})
            try:
                first = answer["logprobs"][0]
                top = {t["token"]: t["logprob"] for t in first["top_logprobs"]}
                generated = first["token"]
                top.setdefault(generated, first["logprob"])
                self.usage["prompt_tokens"] += int(answer.get("prompt_eval_count") or 0)
                self.usage["completion_tokens"] += int(answer.get("eval_count") or 0)
            except (KeyError, IndexError, TypeError, AttributeError):
                top = None
        if top is None:
            raise RemoteError(f"{self.base_url}: the {self.engine} answer has no top log-probabilities; the server "
                              "must support log-probabilities on that endpoint (see engine= in the docs)")
        return dict(top or {}), str(generated or "")

    async def _post(self, what: str, limiter: _RateLimiter, client: Any, path: str, body: dict[str, Any]) -> Any:
        """A JSON POST to ``path`` beside ``/v1`` (an engine's own API), retried like every request."""
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        answer = await self._call(what, limiter, lambda: client.post(root + path, cast_to=object, body=body))
        if not isinstance(answer, dict):
            raise RemoteError(f"{self.base_url}: the {what} answer is not a JSON object")
        return answer

    def _word_score(self, top: dict[str, float], word: str) -> float | None:
        """The label word's log-probability in ``top``: its token ``" " + word`` after a raw prompt; through chat
        (the answer starts a new message, often without a space) ``" " + word`` and ``word`` together."""
        forms = [" " + word, word] if self.engine == "chat" else [" " + word]
        values = [top[f] for f in forms if math.isfinite(top.get(f, math.nan))]
        if not values:
            return None
        return float(np.logaddexp.reduce(values)) if len(values) > 1 else float(values[0])

    async def _prefill(self, client: Any, limiter: _RateLimiter, text: str, word: str) -> float | None:
        """TGI: the exact log-probability of ``" " + word`` after ``text``, read from the prompt's own
        log-probabilities (``decoder_input_details``) when ``text + " " + word`` ends in that one token."""
        body = {"inputs": text + " " + word,
                "parameters": {"max_new_tokens": 1, "details": True, "decoder_input_details": True, "do_sample": False}}
        answer = await self._post("generate", limiter, client, "/generate", body)
        try:
            last = answer["details"]["prefill"][-1]
            value = float(last["logprob"])
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        # the word is one token exactly when the prompt's last token is the whole word (a piece of a word split
        # in several tokens is not); a token's text may carry its space, or sentencepiece's "▁"
        return value if str(last.get("text", "")).strip().lstrip("\u2581") == word and math.isfinite(value) else None

    async def _scores(self, client: Any, limiter: _RateLimiter, text: str, words: list[str]) -> np.ndarray:
        top, _ = await self._top(client, limiter, text, self.top_logprobs)
        if not top:
            raise RemoteError(f"{self.base_url}: the server returned no log-probabilities")
        floor = self.floor if self.floor is not None else min(top.values())
        found = {w: v for w in words if (v := self._word_score(top, w)) is not None}
        missing = [w for w in words if w not in found]
        probed: dict[str, dict[str, float]] = {}  # the probe's answer, reused (a word biased on this prompt)
        if missing and self.exact == "auto" and await self._bias_ready(client, limiter, text, words, top, probed):
            ids = {w: self._token_ids.get(w) for w in words}
            if self.bias_mode == "prefill":  # TGI: one request per missing word, its prompt log-probability
                for w in missing:
                    value = await self._prefill(client, limiter, text, w)
                    if value is not None:
                        found[w] = value
                        self.usage["recovered"] += 1
            elif self.bias_mode == "sample":  # one request per missing word: its unbiased log-probability
                for w in missing:
                    if ids[w] is not None:
                        got = probed[w] if w in probed else (
                            await self._top(client, limiter, text, 1, {str(ids[w]): 100}))[0]
                        value = self._word_score(got, w)
                        if value is not None:
                            found[w] = value
                            self.usage["recovered"] += 1
            elif self.bias_mode == "reflect" and all(i is not None for i in ids.values()) and len(top) > 1:
                # the same bias on a group of label words lifts them into the top N, where their differences
                # are exact; groups of at most N (the server's cap, seen in the plain answer) share an anchor
                # word, which links their differences
                anchor, rest, size = words[0], words[1:], len(top) - 1
                merged: dict[str, float] = {}
                for g in range(0, len(rest), size):
                    group = [anchor, *rest[g : g + size]]
                    got, _ = await self._top(client, limiter, text, len(top), {str(ids[w]): 100 for w in group})
                    values = {w: self._word_score(got, w) for w in group}
                    if any(v is None for v in values.values()):
                        merged = {}
                        break
                    shift = merged[anchor] - values[anchor] if merged else 0.0  # type: ignore[operator]
                    merged.update({w: v + shift for w, v in values.items()})  # type: ignore[operator]
                if merged:
                    self.usage["recovered"] += len(missing)
                    found = merged
        out = np.empty(len(words), np.float32)
        for i, w in enumerate(words):
            if w in found:
                self.usage["exact"] += 1
                out[i] = found[w]
            else:
                self.usage["floored"] += 1
                self.floored_words[w] += 1
                out[i] = floor
        return out

    async def _bias_ready(self, client: Any, limiter: _RateLimiter, text: str, words: list[str],
                          top: dict[str, float], probed: dict[str, dict[str, float]]) -> bool:
        """Whether missing scores can be recovered with ``logit_bias``; the first call finds the label words'
        token ids and probes how the server treats a bias (see the module docstring), once per backend, on
        the prompt at hand (``top``: its plain answer; the probe's biased answer is left in ``probed``)."""
        if self.engine == "tgi":  # no logit_bias (a map is refused), but the prompt's own log-probabilities
            self.bias_mode = "prefill"
            return True
        if self.engine == "ollama":  # neither logit_bias (ignored) nor prompt log-probabilities
            self.bias_mode = "none"
            return False
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            todo = [w for w in words if w not in self._token_ids]
            for w in todo:
                toks = await self._tokenize(client, limiter, " " + w)
                if toks is None:  # no tokenize endpoint: no exact way on this server
                    self.bias_mode = "none"
                    return False
                self._token_ids[w] = toks[0] if len(toks) == 1 else None
            if self.bias_mode is None:
                self.bias_mode = await self._probe_bias(client, limiter, text, words, top, probed)
        return self.bias_mode in ("sample", "reflect")

    async def _probe_bias(self, client: Any, limiter: _RateLimiter, text: str, words: list[str],
                          top: dict[str, float], probed: dict[str, dict[str, float]]) -> str | None:
        """ "sample" when a biased word is generated and reported unbiased, "reflect" when its reported
        log-probability is the biased one (≈ 0 after +100), "none" when the bias changes nothing; None (ask
        again on a later prompt) when no label word is both missing here and one token."""
        candidates = [w for w in words if self._token_ids.get(w) is not None and self._word_score(top, w) is None]
        if not candidates:
            return None
        w = candidates[0]
        try:
            got, generated = await self._top(client, limiter, text, 1, {str(self._token_ids[w]): 100})
        except RefusedError as exc:  # e.g. HTTP 400 "logit_bias is not supported": scores stay floored
            self.bias_refusal = f"HTTP {exc.status}: {exc.reason}"
            return "refused"
        value = self._word_score(got, w)
        if generated not in (" " + w, w) or value is None:
            return "none"
        if value > -0.01:
            return "reflect"
        probed[w] = got
        return "sample"

    async def _tokenize(self, client: Any, limiter: _RateLimiter, text: str) -> list[int] | None:
        """Token ids of ``text`` from the server, beside ``/v1``: llama-cpp-python's ``/extras/tokenize``, llama.cpp's
        ``/tokenize`` (``content``; no BOS by default) or vLLM's ``/tokenize`` (``prompt``, with
        ``add_special_tokens`` off: vLLM adds a BOS by default); retried like every request. ``None`` if it offers
        none of them."""
        for path, body in (("/extras/tokenize", {"input": text}), ("/tokenize", {"content": text}),
                           ("/tokenize", {"model": self.model_name, "prompt": text, "add_special_tokens": False})):
            try:
                answer = await self._post("tokenize", limiter, client, path, body)
            except RemoteError:  # not offered (or not a JSON object): the next shape
                continue
            tokens = answer.get("tokens")
            if isinstance(tokens, list) and tokens:
                return [int(t) for t in tokens]
        return None

    async def _hidden(self, client: Any, limiter: _RateLimiter, text: str) -> np.ndarray:
        resp = await self._call("embeddings", limiter, lambda: client.embeddings.create(
            model=self.embeddings_model or self.model_name, input=text, encoding_format="float"))
        self._count_usage(resp)
        try:
            vec = np.asarray(resp.data[0].embedding, dtype=np.float32)
        except (AttributeError, IndexError, TypeError, ValueError):
            raise RemoteError(f"{self.base_url}: the embeddings answer has no vector") from None
        if vec.ndim == 2:  # one vector per prompt token (llama.cpp without pooling): the last position
            vec = vec[-1]
        if vec.ndim != 1 or not vec.size:
            raise RemoteError(f"{self.base_url}: unexpected embedding shape {vec.shape}")
        if abs(float(np.linalg.norm(vec)) - 1.0) < 1e-3:  # unit length: the server normalised it (see Engines)
            self.usage["normalised"] += 1
        return vec

    def _count_usage(self, resp: Any) -> None:
        usage = getattr(resp, "usage", None)
        if usage is not None:
            self.usage["prompt_tokens"] += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.usage["completion_tokens"] += int(getattr(usage, "completion_tokens", 0) or 0)


def _message(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    text = str(exc).strip() or exc.__class__.__name__
    body = getattr(exc, "body", None)
    if text.startswith("Error code:") and " - " not in text:
        # the openai client quotes only OpenAI's {"error": {"message"}} and keeps the "error" field as the body;
        # TGI and Ollama answer {"error": "..."}, FastAPI servers {"detail": "..."}
        if isinstance(body, dict):
            body = next((body[k] for k in ("error", "detail", "message") if isinstance(body.get(k), str)), "")
        if isinstance(body, str) and body:
            text += f" - {body}"
    return text.splitlines()[0][:300]


def _cannot_connect(exc: Exception) -> bool:
    """Whether a request failed before reaching the server: refused, unknown host, no route, connect timeout
    (the HTTP library's ``ConnectError`` / ``ConnectTimeout`` behind the openai client's error)."""
    return type(exc.__cause__).__name__ in ("ConnectError", "ConnectTimeout")


def _check_number(name: str, value: object, minimum: float, *, whole: bool = False, above: bool = False) -> None:
    """A one-line ModelError unless ``value`` is a finite number ≥ ``minimum`` (> with ``above``), whole if asked."""
    kind = numbers.Integral if whole else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)  # type: ignore[arg-type]
    if not ok or (value <= minimum if above else value < minimum):  # type: ignore[operator]
        what = "a whole number" if whole else "a finite number"
        raise ModelError(f"{name} must be {what} {'>' if above else '≥'} {minimum:g}, not {value!r}")


def _retry_after(exc: Exception | None) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        return min(60.0, float(headers.get("retry-after", "")))
    except ValueError:
        return None
