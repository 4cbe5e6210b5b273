"""Serve a GGUF model with llama-cpp-python's OpenAI-compatible server, on loopback, for the remote path.

Used by the tests and by ``edgetune serve``; any other OpenAI-compatible server works with
:class:`~edgetune.backends.remote.OpenAIBackend` too. Needs ``pip install "llama-cpp-python[server]"``
(it builds llama.cpp from source, ~15 minutes the first time on two cores).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ModelError
from .models import PACKAGED, gguf_path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` in a child process; a context manager that waits until it answers.

    Args:
        model: a packaged model name (``smollm2-135m``, ``gemma3-270m``) or a path to a ``.gguf`` file.
        host: bind address (loopback by default: the server has no authentication).
        port: TCP port (default: a free one).
        n_ctx: context window in tokens.
        n_threads: CPU threads for llama.cpp (default: its own choice).
        alias: the model name clients use (default: ``model``).
        startup_timeout: seconds to wait for the first answer before giving up with the server's log.
    """

    def __init__(self, model: str = "smollm2-135m", host: str = "127.0.0.1", port: int | None = None,
                 n_ctx: int = 2048, n_threads: int | None = None, alias: str | None = None,
                 startup_timeout: float = 300.0, log_path: str | os.PathLike | None = None) -> None:
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias or (model if model in PACKAGED else Path(model).stem)
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        path = gguf_path(self.model) if self.model in PACKAGED else Path(self.model).expanduser()
        if not Path(path).is_file():
            raise ModelError(f"no GGUF file at {str(path)!r}")
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", self.alias,
               "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--embedding", "true"]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        return cmd

    def start(self) -> LlamaServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelError('the llama.cpp server is not installed: pip install "llama-cpp-python[server]"')
        cmd = self.command()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ModelError(f"the llama.cpp server exited with code {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise ModelError(f"the llama.cpp server did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
