"""Faults of the remote path, one test per probe: `edgetune serve` must not orphan its llama.cpp child on a
signal, must not serve a public address without a key; the OpenAI-compatible client must fail fast (and
visibly) on an absent or silent server, refuse bad settings, and turn a non-JSON answer into one line; every
one of these ends, through the CLI, in exit 2 and a single ``error:`` line.

No llama.cpp here: the server's child is a small Python script (``FAKE_CHILD``) that answers /v1/models on
its port and records the signals it gets; servers are the loopback fakes of http_helpers."""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from http_helpers import BackloggedPort, FakeOpenAI, SilentServer

from edgetune.backends import FeatureCache, OpenAIBackend, RemoteError
from edgetune.backends.server import LlamaServer, free_port, is_loopback
from edgetune.data.example import Example
from edgetune.errors import EdgetuneError, ModelError

TEMPLATE = "{text} It was {mask}"
WORDS = ["bad", "great"]
RUN = ["run", "dect", "--model", "x", "--task", "sst2", "--shots", "4", "--seeds", "0", "--test-size", "20",
       "--no-progress", "--backend", "openai"]

FAKE_CHILD = textwrap.dedent('''
    import json, os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    host, port, record, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    key = os.environ.get("API_KEY")

    def note(line):
        with open(record, "a") as f:
            f.write(line + "\\n")

    def on_signal(signum, frame):
        note(f"signal {signum}")
        if mode != "stubborn":  # a stubborn child ignores SIGTERM: only SIGKILL stops it
            raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    class Models(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            ok = key is None or self.headers.get("authorization") == f"Bearer {key}"
            body = json.dumps({"object": "list", "data": [{"id": "fake"}]} if ok else {"detail": "bad key"})
            self.send_response(200 if ok else 401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    note(f"pid {os.getpid()} key {key} argv {sys.argv[1:]}")
    if mode == "silent":  # never answers: still starting up
        while True:
            time.sleep(0.1)
    HTTPServer((host, port), Models).serve_forever()
''')

# `edgetune serve` with the llama.cpp command replaced by FAKE_CHILD: argv = fake record mode [serve flags]
SERVE_WRAPPER = textwrap.dedent('''
    import sys
    from edgetune.backends import server
    from edgetune.cli import main

    fake, record, mode = sys.argv[1:4]
    server.LlamaServer.command = lambda self: [sys.executable, fake, self.host, str(self.port), record, mode]
    sys.exit(main(["serve", *sys.argv[4:]]))
''')


def texts(n: int) -> list[Example]:
    return [Example(text=f"review number {i} of the film", label=None) for i in range(n)]


def backend(url: str, **kw) -> OpenAIBackend:
    kw.setdefault("cache", FeatureCache(None))
    return OpenAIBackend("fake", url, progress=False, **kw)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def retry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edgetune.remote"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def run_cli(args: list[str], tmp_path: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "EDGETUNE_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "400"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgetune.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    return done, time.perf_counter() - start


# -- the server wrapper: no orphaned child, no open door -------------------------------------------------------
def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as any server would: TIME_WAIT is no owner
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _child_pid(record: Path, proc: subprocess.Popen, wait: float = 30.0) -> int:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if record.exists() and record.read_text().startswith("pid "):
            return int(record.read_text().split()[1])
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    raise AssertionError("the fake llama.cpp child never started")


def _answers(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def fake_child(tmp_path) -> Path:
    path = tmp_path / "fake_llama_server.py"
    path.write_text(FAKE_CHILD)
    return path


@pytest.mark.parametrize(("sig", "phase"), [(signal.SIGTERM, "serving"), (signal.SIGINT, "serving"),
                                            (signal.SIGTERM, "starting")])
def test_serve_stops_its_child_on_a_signal_and_frees_the_port(tmp_path, fake_child, sig, phase):
    """Probe 1: SIGTERM (or Ctrl-C) to `edgetune serve` — while serving, or while still waiting for the
    server to start — reaches the llama.cpp child; it is gone, its port is free, and serve exits 0."""
    wrapper, record, port = tmp_path / "serve.py", tmp_path / "child.log", free_port()
    wrapper.write_text(SERVE_WRAPPER)
    mode = "silent" if phase == "starting" else "serve"
    proc = subprocess.Popen([sys.executable, str(wrapper), str(fake_child), str(record), mode, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = None
    try:
        child = _child_pid(record, proc)
        if phase == "serving":
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if _answers(f"http://127.0.0.1:{port}/v1/models") == 200:
                        break
                except OSError:
                    time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)  # `serve` is in its wait loop
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if child is not None and _alive(child):  # the bug: clean up what serve left behind, then fail below
            os.kill(child, signal.SIGKILL)
            leaked = True
        else:
            leaked = False
    assert not leaked, f"the llama.cpp child {child} outlived `edgetune serve`"
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"signal {int(sig)}" in record.read_text()  # forwarded, not just killed with the process group
    assert f"stopped the server ({signal.Signals(sig).name})" in out
    assert _port_is_free(port)


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace_period(tmp_path, fake_child, monkeypatch):
    """Probe 1: LlamaServer.stop signals, waits `stop_timeout`, then kills."""
    record = tmp_path / "child.log"
    monkeypatch.setattr(LlamaServer, "command", lambda self: [sys.executable, str(fake_child), self.host,
                                                              str(self.port), str(record), "stubborn"])
    server = LlamaServer("x", stop_timeout=1.0, startup_timeout=30, log_path=tmp_path / "server.log").start()
    pid = int(record.read_text().split()[1])
    start = time.perf_counter()
    server.stop()
    assert 0.9 < time.perf_counter() - start < 10
    assert server.returncode == -signal.SIGKILL and not _alive(pid)
    assert f"signal {int(signal.SIGTERM)}" in record.read_text()
    assert _port_is_free(server.port)
    server.stop()  # twice is harmless


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("example.org", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_serve_refuses_a_public_host_without_an_api_key(tmp_path):
    """Probe 2: `edgetune serve --host 0.0.0.0` is one error line (before any model or child), not a silent
    open door; the library says the same."""
    done, seconds = run_cli(["serve", "--host", "0.0.0.0"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert error_lines(done.stderr) == [done.stderr.strip()]
    assert "refusing to serve on '0.0.0.0' without authentication" in done.stderr
    assert "--api-key" in done.stderr and "--insecure" in done.stderr
    assert seconds < 20
    with pytest.raises(EdgetuneError, match="without authentication"):
        LlamaServer("x", host="192.168.1.20", port=1)
    assert LlamaServer("x", host="0.0.0.0", port=1, insecure=True).base_url == "http://127.0.0.1:1/v1"
    assert LlamaServer("x", host="::1", port=1).base_url == "http://[::1]:1/v1"


def test_serve_with_an_api_key_passes_it_to_the_child_not_its_command_line(tmp_path, fake_child, monkeypatch):
    """Probe 2: with --api-key the child requires the key (given in its environment, not in `ps`); a
    stray HOST/PORT/API_KEY in our environment does not reach it."""
    record = tmp_path / "child.log"
    monkeypatch.setenv("api_key", "stray")
    monkeypatch.setenv("HOST", "203.0.113.1")
    monkeypatch.setattr(LlamaServer, "command", lambda self: [sys.executable, str(fake_child), self.host,
                                                              str(self.port), str(record), "serve"])
    with LlamaServer("x", host="0.0.0.0", api_key="s3cret", startup_timeout=30,
                     log_path=tmp_path / "server.log") as server:  # ready only if the key was sent and accepted
        assert "key s3cret " in record.read_text() and "s3cret" not in " ".join(server.command())
        assert _answers(f"{server.base_url}/models") == 401
        assert _answers(f"{server.base_url}/models", "s3cret") == 200
    assert _port_is_free(server.port)


def test_cli_serve_takes_api_key_and_insecure(tmp_path, fake_child):
    """Probe 2 through the CLI: --host 0.0.0.0 --api-key KEY serves (the key reaches the child); --insecure
    serves without one."""
    wrapper = tmp_path / "serve.py"
    wrapper.write_text(SERVE_WRAPPER)
    for flags, key in ((["--api-key", "k3y"], "k3y"), (["--insecure"], None)):
        record, port = tmp_path / f"child-{key}.log", free_port()
        proc = subprocess.Popen([sys.executable, str(wrapper), str(fake_child), str(record), "serve", "--host",
                                 "0.0.0.0", "--port", str(port), *flags],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _child_pid(record, proc)
            assert f"key {key} " in record.read_text()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err


# -- the client: fail fast and visibly -----------------------------------------------------------------------
def test_refused_connection_fails_in_seconds_with_a_line_per_retry(caplog):
    """Probe 3: defaults (timeout 30 s, 6 retries) against a port nobody listens on: a few quick retries,
    each announced, then one error naming the cause — not a minute of silent backoff."""
    caplog.set_level(logging.WARNING, logger="edgetune.remote")
    url = dead_url()
    b = backend(url, concurrency=4)
    start = time.perf_counter()
    with pytest.raises(RemoteError, match=r"failed 3 times; last error: ConnectionRefusedError.*Is the server "
                       r"running") as err:
        b.features(texts(8), TEMPLATE, WORDS)
    assert time.perf_counter() - start < 5
    assert "\n" not in str(err.value) and url in str(err.value)
    lines = retry_lines(caplog)
    assert [line.rsplit("; ", 1)[1] for line in lines] == ["retry 1 of 2", "retry 2 of 2"]  # 4 requests, 1 line
    assert all(url in line and "ConnectionRefusedError" in line for line in lines)


def test_connect_timeout_is_short_even_with_a_long_request_timeout(caplog):
    """Probe 3: a host that never completes the TCP handshake fails on the connect timeout (5 s by default,
    0.5 s here), not on the 30 s request timeout."""
    caplog.set_level(logging.WARNING, logger="edgetune.remote")
    with BackloggedPort() as port:
        b = backend(port.base_url, connect_timeout=0.5, concurrency=1, hidden=False)
        start = time.perf_counter()
        with pytest.raises(RemoteError, match=r"could not connect within 0.5 s"):
            b.features(texts(1), TEMPLATE, WORDS)
        assert time.perf_counter() - start < 8
    assert len(retry_lines(caplog)) == 2


def test_a_server_that_never_answers_fails_after_a_few_timeouts_each_announced(caplog):
    """Probe 3: a server that accepts connections and never answers is a timeout; with no answer yet in this
    run it gets the short retry budget (3 timeouts, not 7), each retry on its own line."""
    caplog.set_level(logging.WARNING, logger="edgetune.remote")
    with SilentServer() as silent:
        b = backend(silent.base_url, timeout=1.0, backoff=0.05, concurrency=1, hidden=False)
        start = time.perf_counter()
        with pytest.raises(RemoteError, match=r"failed 3 times; last error: no answer within 1 s"):
            b.features(texts(1), TEMPLATE, WORDS)
        elapsed = time.perf_counter() - start
    assert 2.5 < elapsed < 6
    assert silent.connections == 3
    assert [line.split("request failed ")[1] for line in retry_lines(caplog)] == [
        "(no answer within 1 s); retry 1 of 2", "(no answer within 1 s); retry 2 of 2"]


def test_5xx_keep_the_full_retry_budget_and_say_so(caplog):
    """Probe 3 (unchanged part): a server that answers 500 keeps max_retries, with backoff, a line each."""
    caplog.set_level(logging.WARNING, logger="edgetune.remote")
    with FakeOpenAI(WORDS, fail=dict.fromkeys(range(1, 5), 500)) as srv:
        b = backend(srv.base_url, concurrency=1, backoff=0.01, max_retries=6, hidden=False)
        feats = b.features(texts(1), TEMPLATE, WORDS)
    assert feats.stats["retries"] == 4
    assert [line.rsplit("; ", 1)[1] for line in retry_lines(caplog)] == [f"retry {i} of 6" for i in range(1, 5)]


# -- settings ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"max_retries": -1}, {"max_retries": 1.5}, {"max_retries": True}, {"timeout": -5}, {"timeout": 0},
    {"timeout": math.nan}, {"timeout": math.inf}, {"concurrency": 0}, {"top_logprobs": 0}, {"rate_limit": 0},
    {"rate_limit": -2.0}, {"backoff": -1}, {"connect_timeout": 0}, {"connect_retries": -1}])
def test_bad_remote_settings_are_one_line_errors(bad):
    """Probe 4 (library): refused when the backend is made, naming the setting."""
    name, value = next(iter(bad.items()))
    with pytest.raises(ModelError, match=rf"^{name} must be a (whole|finite) number [≥>] \d, not {value!r}$"):
        backend("http://127.0.0.1:9/v1", **bad)


@pytest.mark.parametrize(("flag", "value"), [("--max-retries", "-1"), ("--max-retries", "two"), ("--timeout", "-5"),
                                             ("--timeout", "0"), ("--timeout", "nan"), ("--timeout", "inf"),
                                             ("--concurrency", "0"), ("--top-logprobs", "0"), ("--rate-limit", "0")])
def test_bad_remote_flags_are_refused_by_the_parser(capsys, flag, value):
    """Probe 4 (CLI): refused while parsing, before any model or data loads: exit 2, one line."""
    from edgetune.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*RUN, "--base-url", "http://127.0.0.1:9/v1", flag, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: argument {flag}: ") and repr(value) in err


# -- answers that are not JSON -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/completions", "/embeddings"])
@pytest.mark.parametrize("ctype", ["text/html", "application/json"])
def test_an_answer_that_is_not_json_is_one_line_naming_the_url(path, ctype, caplog):
    """Probe 5: HTTP 200 with an HTML page (or a body labelled JSON that is not) fails at once, in one line
    that names the URL; no retries, no traceback."""
    caplog.set_level(logging.WARNING, logger="edgetune.remote")
    with FakeOpenAI(WORDS, not_json={path: ctype}) as srv:
        b = backend(srv.base_url, concurrency=1)
        with pytest.raises(RemoteError, match=r"the (completion|embeddings) answer was not JSON") as err:
            b.features(texts(2), TEMPLATE, WORDS)
    message = str(err.value)
    assert message.startswith(srv.base_url) and "\n" not in message and "Welcome to nginx" in message
    assert err.value.__cause__ is None and not retry_lines(caplog)


@pytest.mark.parametrize("ctype", ["text/html", "application/json"])
def test_a_tokenize_endpoint_that_is_not_json_means_no_exact_scores(ctype):
    """Probe 5, tokenize: a non-JSON answer there is 'no tokenize endpoint' (floors, with the warning)."""
    with FakeOpenAI([*WORDS, "other", "words"], top=1, bias="sample",
                    not_json={"/extras/tokenize": ctype, "/tokenize": ctype}) as srv:
        b = backend(srv.base_url, hidden=False)
        with pytest.warns(UserWarning, match="the server offers no exact way"):
            feats = b.features(texts(3), TEMPLATE, WORDS)
    assert b.bias_mode == "none" and feats.queries == 3


# -- through the CLI: exit 2, one error line -----------------------------------------------------------------
@pytest.mark.parametrize("fault", ["refused", "silent", "not_json", "bad_flag"])
def test_cli_run_against_a_faulty_server_is_exit_2_and_one_error_line(tmp_path, fault):
    """Probe 6: `edgetune run dect --backend openai ...` in a subprocess against each fault: exit 2, one
    `error:` line, no traceback, in seconds (most of it is Python starting and importing torch)."""
    extra = ["--timeout", "1"] if fault == "silent" else ["--max-retries", "-1"] if fault == "bad_flag" else []
    if fault == "refused" or fault == "bad_flag":
        done, seconds = run_cli([*RUN, "--base-url", dead_url(), *extra], tmp_path)
    elif fault == "silent":
        with SilentServer() as silent:
            done, seconds = run_cli([*RUN, "--base-url", silent.base_url, *extra], tmp_path)
    else:
        with FakeOpenAI(WORDS, not_json={"/completions": "text/html"}) as srv:
            done, seconds = run_cli([*RUN, "--base-url", srv.base_url], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and errors[0] == done.stderr.strip().splitlines()[-1]
    expected = {"refused": "failed 3 times; last error: ConnectionRefusedError",
                "silent": "failed 3 times; last error: no answer within 1 s",
                "not_json": "the completion answer was not JSON", "bad_flag": "argument --max-retries"}[fault]
    assert expected in errors[0]
    if fault in ("refused", "silent"):
        assert sum("retry" in line for line in done.stderr.splitlines()) == 2
    assert seconds < 60, seconds
