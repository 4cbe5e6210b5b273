"""Serve a GGUF model with llama-cpp-python's OpenAI-compatible server, for the remote path.

Used by the tests and by ``edgetune serve``; any other OpenAI-compatible server works with
:class:`~edgetune.backends.remote.OpenAIBackend` too. Needs ``pip install "llama-cpp-python[server]"``
(it builds llama.cpp from source, ~15 minutes the first time on two cores).

The server binds loopback by default. It has no authentication unless an API key is given, so an address
reachable from other machines is refused without ``api_key`` (clients then send it as a bearer token) or an
explicit ``insecure=True``. The child never outlives its owner's orderly exit: :meth:`LlamaServer.stop`
signals it, waits, and kills it after a grace period, and :meth:`LlamaServer.run_until_signal` (what
``edgetune serve`` does) stops it when this process receives SIGTERM, SIGINT or SIGHUP.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import EdgetuneError, ModelError
from .models import PACKAGED, gguf_path

#: signals that make :meth:`LlamaServer.run_until_signal` stop the server and return
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
#: environment variables the llama-cpp-python server reads that would override our arguments
_CHILD_ENV_OVERRIDES = ("HOST", "PORT", "CONFIG_FILE")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: ``localhost``, 127.0.0.0/8 or ``::1``."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` in a child process; a context manager that waits until it answers.

    Args:
        model: a packaged model name (``smollm2-135m``, ``gemma3-270m``) or a path to a ``.gguf`` file.
        host: bind address (loopback by default). Any other address needs ``api_key`` or ``insecure``.
        port: TCP port (default: a free one).
        n_ctx: context window in tokens.
        n_threads: CPU threads for llama.cpp (default: its own choice).
        alias: the model name clients use (default: ``model``).
        startup_timeout: seconds to wait for the first answer before giving up with the server's log.
        log_path: the child's output (default: a new temporary file).
        api_key: every request must then carry it as a bearer token (passed to the child in its
            environment, not on its command line).
        insecure: serve a non-loopback address without an API key, knowingly.
        stop_timeout: seconds :meth:`stop` waits after signalling the child before killing it.

    Raises:
        EdgetuneError: a non-loopback ``host`` without ``api_key`` or ``insecure``.
    """

    def __init__(self, model: str = "smollm2-135m", host: str = "127.0.0.1", port: int | None = None,
                 n_ctx: int = 2048, n_threads: int | None = None, alias: str | None = None,
                 startup_timeout: float = 300.0, log_path: str | os.PathLike | None = None,
                 api_key: str | None = None, insecure: bool = False, stop_timeout: float = 10.0) -> None:
        if not is_loopback(host) and not api_key and not insecure:
            raise EdgetuneError(f"refusing to serve on {host!r} without authentication: the server would answer "
                                "anyone who can reach this machine; give --api-key KEY (clients then pass the same "
                                "--api-key) or --insecure")
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias or (model if model in PACKAGED else Path(model).stem)
        self.startup_timeout = startup_timeout
        self.api_key = api_key
        self.stop_timeout = stop_timeout
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.returncode: int | None = None  # the child's exit status once it has stopped
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The URL clients on this machine use (a wildcard bind address is reached through loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host.strip("[]"), self.host)
        host = f"[{host.strip('[]')}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The child's command line (the API key travels in its environment instead)."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelError('the llama.cpp server is not installed: pip install "llama-cpp-python[server]"')
        path = gguf_path(self.model) if self.model in PACKAGED else Path(self.model).expanduser()
        if not Path(path).is_file():
            raise ModelError(f"no GGUF file at {str(path)!r}")
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", self.alias,
               "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--embedding", "true"]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        return cmd

    def start(self) -> LlamaServer:
        """Start the child and wait until it answers ``/v1/models``.

        Raises:
            ModelError: the child exited, or did not answer within ``startup_timeout`` (it is stopped), with the
                tail of its log.
        """
        self._spawn()
        try:
            self._wait_ready(lambda: False)
        except BaseException:  # e.g. Ctrl-C while waiting: no orphaned child
            self.stop()
            raise
        return self

    def run_until_signal(self, ready: Callable[[], None] | None = None) -> int | None:
        """Start the server, call ``ready()`` once it answers, and block until the child exits by itself
        (returns ``None``) or this process receives one of :data:`STOP_SIGNALS` (returns its number), during
        startup too. The child is stopped either way (:meth:`stop`, with the same signal), so it does not
        outlive this call and its port is free again. Call it from the main thread; the previous signal
        handlers are restored on return."""
        received: list[int] = []

        def on_signal(signum: int, frame: object) -> None:
            received.append(signum)

        previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
        try:
            self._spawn()
            if self._wait_ready(lambda: bool(received)):
                if ready is not None:
                    ready()
                while not received and self._proc is not None and self._proc.poll() is None:
                    time.sleep(0.2)
            return received[0] if received else None
        finally:
            self.stop(received[0] if received else signal.SIGTERM)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send the child ``sig`` (SIGTERM by default), wait up to ``stop_timeout`` s, then kill it; records
        its exit status in :attr:`returncode`. Does nothing if it is not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncode = proc.returncode

    def _spawn(self) -> None:
        cmd = self.command()
        env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_OVERRIDES and k.lower() != "api_key"}
        if self.api_key:
            env["API_KEY"] = self.api_key
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env)

    def _wait_ready(self, cancelled: Callable[[], bool]) -> bool:
        """True once the child answers, False if ``cancelled()`` turns true first; a ModelError (child
        stopped) if it exits or stays silent past ``startup_timeout``."""
        request = urllib.request.Request(f"{self.base_url}/models")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if cancelled():
                return False
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                self.stop()
                raise ModelError(f"the llama.cpp server exited with code {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(request, timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise ModelError(f"the llama.cpp server did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
