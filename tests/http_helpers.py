"""Loopback HTTP helpers for the remote-backend tests: a fake OpenAI-compatible server and a
fault-injecting, request-counting proxy. Standard library only; everything binds 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


def _prompt_of(body: dict) -> str:
    """A request's prompt (or input, or text to tokenise, or a chat's last message)."""
    if body.get("messages"):
        return str(body["messages"][-1].get("content", ""))
    return str(body.get("prompt", body.get("input", body.get("content", body.get("inputs", "")))))


def _request_key(body: dict) -> str:
    """What a request asks about, for counting: its prompt plus its logit bias if any."""
    bias = body.get("logit_bias")
    return _prompt_of(body) + (f" |bias {json.dumps(bias, sort_keys=True)}" if bias else "")


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 with a random port, run in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # handlers reach their server object through this
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOpenAI(_Server):
    """Answers /v1/completions with deterministic top log-probabilities derived from the prompt, and
    /v1/embeddings with one vector per "token" (word) of the prompt. ``fail`` maps a request number
    (1-based) to an HTTP status to answer instead; ``words`` are the tokens it knows."""

    def __init__(self, words: list[str], top: int = 5, dim: int = 6, fail: dict[int, int] | None = None,
                 per_token: bool = True, bias: str | None = None, not_json: dict[str, str] | None = None,
                 engine: str = "llama.cpp", normalised: bool = False) -> None:
        """``bias``: None (no tokenize endpoint, ``logit_bias`` ignored), ``"sample"`` (llama-cpp-python's way:
        the biased token is generated and its unbiased log-probability reported beside the top) or ``"reflect"``
        (log-probabilities computed after the bias) or ``"refuse"`` (HTTP 400 to any request with a bias).
        ``not_json`` maps a path ending (``"/completions"``, ``"/embeddings"``, ``"/tokenize"``) to a content type
        to answer those requests with, status 200, with an HTML page instead of JSON. ``engine="vllm"``: tokenize as
        vLLM's OpenAI server does (vllm/entrypoints/openai/protocol.py, ``TokenizeCompletionRequest``): only
        ``POST /tokenize`` with ``{"model", "prompt", "add_special_tokens"}`` (default true: a BOS id, 1, first),
        answering ``{"count", "max_model_len", "tokens"}``; no ``/extras/tokenize``; a body without ``prompt`` is
        a 400.

        Other engines, each as its documented answers (no other route answers but a 404):

        - ``"openai"`` (openai-python's types: completion_create_params.py, chat/completion_create_params.py,
          chat/chat_completion_token_logprob.py): ``/v1/completions`` refuses ``logprobs`` > 5 and
          ``/v1/chat/completions`` ``top_logprobs`` > 20 with HTTP 400; chat answers in
          ``choices[0].logprobs.content[0]`` (``token``, ``logprob``, ``bytes``, ``top_logprobs``), its first
          token without a leading space; ``logit_bias`` as ``bias`` says; no tokenize endpoint.
        - ``"tgi"`` (text-generation-inference, router/src/lib.rs and validation.rs): ``POST /generate`` with
          ``{"inputs", "parameters": {"details", "top_n_tokens", "decoder_input_details"}}``; ``top_n_tokens``
          above ``top`` (``--max-top-n-tokens``, 5 by default) is a 422; answers ``details.tokens``,
          ``details.top_tokens[0]`` (``id``, ``text``, ``logprob``, ``special``) and with
          ``decoder_input_details`` ``details.prefill`` (one entry per prompt token, the first without a
          log-probability); no ``logit_bias``.
        - ``"ollama"`` (ollama/ollama api/types.go, server/routes.go): ``POST /api/generate`` with ``logprobs``,
          ``top_logprobs`` (above 20: HTTP 400 "top_logprobs must be between 0 and 20"), answering
          ``logprobs[0]`` (``token``, ``logprob``, ``top_logprobs``), ``prompt_eval_count``, ``eval_count``;
          ``logit_bias`` ignored; no tokenize endpoint.

        ``normalised``: embeddings of unit length (vLLM, TEI, Ollama, OpenAI by default)."""
        self.engine = engine
        self.normalised = normalised
        self.words, self.top, self.dim, self.per_token, self.bias = words, top, dim, per_token, bias
        self.not_json = dict(not_json or {})
        self.fail = dict(fail or {})
        self.requests = 0
        self.seen: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        super().__init__(_FakeHandler)

    @staticmethod
    def logprobs(prompt: str, words: list[str]) -> dict[str, float]:
        out = {}
        for w in words:
            h = hashlib.sha256(f"{prompt}|{w}".encode()).digest()
            out[" " + w] = -0.1 - 8.0 * h[0] / 255.0
        return out

    @staticmethod
    def vector(prompt: str, dim: int) -> list[float]:
        h = hashlib.sha256(prompt.encode()).digest()
        return [b / 255.0 for b in h[:dim]]


class _FakeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def do_POST(self):
        fake: FakeOpenAI = self.server.owner
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with fake.lock:
            fake.requests += 1
            status = fake.fail.get(fake.requests)
        if status:
            self._json(status, {"error": {"message": f"injected {status}", "type": "server_error"}})
            return
        ctype = next((t for end, t in fake.not_json.items() if self.path.endswith(end)), None)
        if ctype is not None:
            data = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        prompt = _prompt_of(body)
        n_tokens = max(1, len(prompt.split()))
        with fake.lock:
            fake.seen[(self.path, _request_key(body))] += 1
        engine_path = fake.engine in ("tgi", "ollama") or self.path.endswith("/chat/completions") or (
            fake.engine == "openai" and self.path.endswith("/completions"))
        if engine_path and self._engine_answer(fake, body, prompt, n_tokens):
            return
        if self.path.endswith("/tokenize") and fake.bias and fake.engine not in ("openai", "tgi", "ollama"):
            known = [" " + w for w in fake.words]
            if fake.engine == "vllm":
                if self.path.endswith("/extras/tokenize"):
                    self._json(404, {"detail": "Not Found"})
                    return
                if "prompt" not in body:
                    self._json(400, {"error": {"message": "prompt: Field required", "type": "BadRequestError"}})
                    return
                text = str(body["prompt"])
                ids = [known.index(text)] if text in known else [7, 7]
                ids = [1, *ids] if body.get("add_special_tokens", True) else ids
                self._json(200, {"count": len(ids), "max_model_len": 2048, "tokens": ids})
                return
            text = str(body.get("input", body.get("content", "")))
            self._json(200, {"tokens": [known.index(text)] if text in known else [7, 7]})
            return
        if self.path.endswith("/completions") and fake.bias == "refuse" and body.get("logit_bias"):
            self._json(400, {"error": {"message": "logit_bias is not supported", "type": "invalid_request_error"}})
            return
        if self.path.endswith("/completions"):
            lp = fake.logprobs(prompt, fake.words)
            bias = {" " + fake.words[int(k)]: float(v) for k, v in (body.get("logit_bias") or {}).items()}
            n = int(body.get("logprobs") or 1)
            if fake.bias == "reflect" and bias:
                shifted = {w: v + bias.get(w, 0.0) for w, v in lp.items()}
                norm = math.log(sum(math.exp(v) for v in shifted.values()))
                lp = {w: v - norm for w, v in shifted.items()}
            top = dict(sorted(lp.items(), key=lambda kv: -kv[1])[: min(fake.top, n)])
            chosen = next(iter(top))
            if fake.bias == "sample" and bias:
                chosen = max(bias, key=lambda w: lp[w] + bias[w])
                top[chosen] = lp[chosen]  # the generated token is reported, unbiased, beside the top
            choice = {"text": chosen, "index": 0, "finish_reason": "length",
                      "logprobs": {"tokens": [chosen], "token_logprobs": [lp[chosen]],
                                   "top_logprobs": [top], "text_offset": [0]}}
            self._json(200, {"id": "c", "object": "text_completion", "created": 0, "model": body.get("model"),
                             "choices": [choice],
                             "usage": {"prompt_tokens": n_tokens, "completion_tokens": 1,
                                       "total_tokens": n_tokens + 1}})
        elif self.path.endswith("/embeddings"):
            last = fake.vector(prompt, fake.dim)
            if fake.normalised:
                norm = math.sqrt(sum(v * v for v in last))
                last = [v / norm for v in last]
            emb = [[0.0] * fake.dim] * (n_tokens - 1) + [last] if fake.per_token else last
            self._json(200, {"object": "list", "model": body.get("model"),
                             "data": [{"object": "embedding", "index": 0, "embedding": emb}],
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def _engine_answer(self, fake: FakeOpenAI, body: dict, prompt: str, n_tokens: int) -> bool:
        """Answer as ``fake.engine`` does (see FakeOpenAI); False when the path is not one it serves here."""
        lp = fake.logprobs(prompt, fake.words)
        bias = {" " + fake.words[int(k)]: float(v) for k, v in (body.get("logit_bias") or {}).items()}

        def pick(n: int) -> tuple[dict[str, float], str]:
            top = dict(sorted(lp.items(), key=lambda kv: -kv[1])[: min(fake.top, n)])
            chosen = next(iter(top))
            if fake.bias == "sample" and bias:
                chosen = max(bias, key=lambda w: lp[w] + bias[w])
                top[chosen] = lp[chosen]
            return top, chosen

        if fake.engine not in ("tgi", "ollama") and self.path.endswith("/chat/completions"):
            n = int(body.get("top_logprobs") or 0)
            if n > 20 or not body.get("logprobs"):
                self._json(400, {"error": {"message": "top_logprobs must be between 0 and 20 and needs logprobs",
                                           "type": "invalid_request_error"}})
                return True
            top, chosen = pick(n)
            strip = {w: w.lstrip() for w in top}  # a chat answer's first token carries no leading space
            entry = [{"token": strip[w], "logprob": v, "bytes": list(strip[w].encode())} for w, v in top.items()]
            content = [{"token": strip[chosen], "logprob": lp[chosen], "bytes": list(strip[chosen].encode()),
                        "top_logprobs": entry}]
            choice = {"index": 0, "finish_reason": "length", "logprobs": {"content": content},
                      "message": {"role": "assistant", "content": strip[chosen]}}
            self._json(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body.get("model"),
                             "choices": [choice], "usage": {"prompt_tokens": n_tokens, "completion_tokens": 1,
                                                            "total_tokens": n_tokens + 1}})
            return True
        if fake.engine == "openai" and self.path.endswith("/completions"):
            if int(body.get("logprobs") or 0) > 5:
                self._json(400, {"error": {"message": "logprobs must be at most 5", "type": "invalid_request_error"}})
                return True
            return False  # the plain completions answer
        if fake.engine == "tgi" and self.path == "/generate":
            params = body.get("parameters") or {}
            n = int(params.get("top_n_tokens") or 0)
            if n > fake.top:
                self._json(422, {"error": f"`top_n_tokens` must be >= 0 and <= {fake.top}. Given: {n}",
                                 "error_type": "validation"})
                return True
            words = str(body.get("inputs", "")).split(" ")
            details: dict = {"finish_reason": "length", "generated_tokens": 1, "seed": None}
            if params.get("decoder_input_details"):
                head = " ".join(words[:-1])  # the last prompt token's log-probability given the rest
                last = " " + words[-1]
                value = fake.logprobs(head, fake.words).get(last, -12.0)
                details["prefill"] = [{"id": 1, "text": "<s>", "logprob": None}] + [
                    {"id": 7, "text": " " + w, "logprob": -3.0} for w in words[:-1]] + [
                    {"id": 9, "text": last, "logprob": value}]
            top, chosen = pick(n or 1)
            details["tokens"] = [{"id": 9, "text": chosen, "logprob": lp[chosen], "special": False}]
            if n:
                details["top_tokens"] = [[{"id": 9, "text": w, "logprob": v, "special": False}
                                          for w, v in top.items()]]
            self._json(200, {"generated_text": chosen, "details": details})
            return True
        if fake.engine == "ollama" and self.path == "/api/generate":
            n = int(body.get("top_logprobs") or 0)
            if n > 20:
                self._json(400, {"error": "top_logprobs must be between 0 and 20"})
                return True
            bias.clear()  # Ollama has no logit_bias
            top, chosen = pick(n or 1)
            first = {"token": chosen, "logprob": lp[chosen],
                     "top_logprobs": [{"token": w, "logprob": v} for w, v in top.items()]}
            self._json(200, {"model": body.get("model"), "created_at": "2026-12-07T00:00:00Z", "response": chosen,
                             "done": True, "prompt_eval_count": n_tokens, "eval_count": 1,
                             **({"logprobs": [first]} if body.get("logprobs") else {})})
            return True
        if fake.engine in ("tgi", "ollama") and not self.path.endswith("/embeddings"):
            self._json(404, {"error": "not found"})
            return True
        return False

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FaultProxy(_Server):
    """Forwards to ``upstream`` (a base URL); a seeded ``rate`` of requests instead gets a fault, cycling
    through ``faults``: "drop" (connection closed, no answer), "delay" (held ``delay`` s, past the client's
    timeout, then closed, never forwarded) and "500". ``forwarded`` counts, per (path, prompt), the
    requests that reached the upstream and were answered 200."""

    def __init__(self, upstream: str, rate: float = 0.0, faults: tuple[str, ...] = ("drop", "delay", "500"),
                 delay: float = 3.0, seed: int = 0) -> None:
        parsed = urlparse(upstream)
        self.host, self.port, self.prefix = parsed.hostname, parsed.port, parsed.path.rstrip("/")
        self.rate, self.faults, self.delay = rate, faults, delay
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.forwarded: Counter[tuple[str, str]] = Counter()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        super().__init__(_ProxyHandler)

    def decide(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.rng.random() < self.rate:
                fault = self.faults[sum(self.injected.values()) % len(self.faults)]
                self.injected[fault] += 1
                return fault
        return None


class _ProxyHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self._forward(b"", None)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        self._forward(raw, json.loads(raw or b"{}"))

    def _forward(self, raw: bytes, body: dict | None) -> None:
        proxy: FaultProxy = self.server.owner
        fault = proxy.decide() if body is not None else None
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault == "delay":
            time.sleep(proxy.delay)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault == "500":
            data = b'{"error": {"message": "injected 500", "type": "server_error"}}'
            self.send_response(500)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        path = self.path
        conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=120)
        headers = {"content-type": "application/json"} if body is not None else {}
        conn.request(self.command, path, body=raw or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if body is not None and resp.status == 200:
            with proxy.lock:
                proxy.forwarded[(path.rsplit("/", 1)[-1], _request_key(body))] += 1
        self.send_response(resp.status)
        self.send_header("content-type", resp.getheader("content-type", "application/json"))
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class SilentServer:
    """A loopback TCP port that accepts connections and reads requests but never answers (a hung server).
    ``connections`` counts the accepted connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._held.append(conn)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        for conn in self._held:
            conn.close()
        self.sock.close()


class BackloggedPort:
    """A loopback port whose listen queue is full and never accepted from: a new connection attempt hangs
    until the client's connect timeout, like a host that drops packets (Linux behaviour)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self._fillers: list[socket.socket] = []
        for _ in range(3):  # fill the accept queue (and the SYN queue's allowance for it)
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(self.sock.getsockname())  # in progress (EINPROGRESS): it only has to be queued
            self._fillers.append(c)
        time.sleep(0.2)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for c in self._fillers:
            c.close()
        self.sock.close()
