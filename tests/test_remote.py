"""The OpenAI-compatible backend against a fake loopback server (fast; the real llama.cpp server is in
test_server.py): scores and floors, per-token embeddings, retries, clear errors, caching as answers arrive."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from http_helpers import FakeOpenAI, FaultProxy

from edgetune.backends import FeatureCache, OpenAIBackend, RemoteError, load_backend
from edgetune.data.example import Example
from edgetune.data.templates import Template
from edgetune.errors import ModelError

TEMPLATE = "{text} It was {mask}"
WORDS = ["bad", "great"]


def texts(n: int) -> list[Example]:
    return [Example(text=f"review number {i} of the film", label=None) for i in range(n)]


def backend(url: str, **kw) -> OpenAIBackend:
    kw.setdefault("cache", FeatureCache(None))
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff", 0.01)
    return OpenAIBackend("fake", url, progress=False, **kw)


def test_scores_are_label_word_logprobs_and_hidden_is_last_token_vector():
    with FakeOpenAI([*WORDS, "okay", "fine"], top=4) as srv:
        b = backend(srv.base_url)
        feats = b.features(texts(5), TEMPLATE, WORDS)
    for i, ex in enumerate(texts(5)):
        prompt = f"{ex.text} It was"
        lp = FakeOpenAI.logprobs(prompt, [*WORDS, "okay", "fine"])
        np.testing.assert_allclose(feats.scores[i], [lp[" bad"], lp[" great"]], rtol=1e-6)
        np.testing.assert_allclose(feats.hidden[i], FakeOpenAI.vector(prompt, 6), rtol=1e-6)
    assert feats.queries == 5
    assert feats.stats["requests"] == 10  # one completion + one embeddings request per prompt
    assert feats.stats["prompt_tokens"] == 2 * sum(len(f"{e.text} It was".split()) for e in texts(5))
    assert feats.stats.get("floored", 0) == 0


def test_pooled_embedding_and_scores_only():
    with FakeOpenAI(WORDS, per_token=False) as srv:
        feats = backend(srv.base_url).features(texts(2), TEMPLATE, WORDS)
        np.testing.assert_allclose(feats.hidden[1], FakeOpenAI.vector("review number 1 of the film It was", 6))
        only = backend(srv.base_url, hidden=False).features(texts(2), TEMPLATE, WORDS)
        assert only.stats["requests"] == 2


def test_missing_label_word_gets_counted_floor_not_zero():
    # the server knows 5 words and returns the top 2: at least one label word of three is missing
    vocab = ["bad", "great", "okay", "x", "y"]
    with FakeOpenAI(vocab, top=2) as srv:
        b = backend(srv.base_url)
        with pytest.warns(UserWarning, match="floor value"):
            feats = b.features(texts(6), TEMPLATE, ["bad", "great", "okay"])
    missing = 0
    for i, ex in enumerate(texts(6)):
        lp = FakeOpenAI.logprobs(f"{ex.text} It was", vocab)
        top = dict(sorted(lp.items(), key=lambda kv: -kv[1])[:2])
        expected = [top.get(" " + w, min(top.values())) for w in ["bad", "great", "okay"]]
        missing += sum(" " + w not in top for w in ["bad", "great", "okay"])
        np.testing.assert_allclose(feats.scores[i], expected, rtol=1e-6)
    assert missing >= 6  # at least one of three label words is outside the top 2 of every prompt
    assert feats.stats["floored"] == missing
    assert sum(b.floored_words.values()) == missing
    assert not np.any(feats.scores == 0)

    with FakeOpenAI(vocab, top=2) as srv, pytest.warns(UserWarning):
        fixed = backend(srv.base_url, floor=-50.0).features(texts(3), TEMPLATE, ["bad", "great", "okay"])
    assert (fixed.scores == -50.0).sum() == fixed.stats["floored"] >= 3


@pytest.mark.parametrize("mode", ["sample", "reflect"])
def test_missing_label_words_are_made_exact_with_logit_bias(mode):
    """A server with a tokenize endpoint that honours logit_bias: no floors. "sample" (llama-cpp-python's
    way) gives every score exactly; "reflect" gives their differences exactly (all the methods use)."""
    vocab, words = ["bad", "great", "okay", "x", "y"], ["bad", "great", "okay"]
    with FakeOpenAI(vocab, top=2, bias=mode) as srv:
        b = backend(srv.base_url)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no floor warning
            feats = b.features(texts(6), TEMPLATE, words)
        assert b.bias_mode == mode
        with pytest.warns(UserWarning, match="floor value"):
            off = backend(srv.base_url, exact="off").features(texts(6), TEMPLATE, words)
    for i, ex in enumerate(texts(6)):
        lp = FakeOpenAI.logprobs(f"{ex.text} It was", vocab)
        raw = np.array([lp[" " + w] for w in words])
        got = feats.scores[i] if mode == "sample" else feats.scores[i] - feats.scores[i][0] + raw[0]
        np.testing.assert_allclose(got, raw, rtol=1e-5)
    assert feats.stats.get("floored", 0) == 0 and feats.stats["exact"] == 18 and feats.stats["recovered"] >= 6
    assert off.stats["floored"] >= 6 and off.stats.get("recovered", 0) == 0


def test_a_refused_logit_bias_falls_back_to_floors_with_one_line():
    """A server that answers HTTP 400 to a biased request: extraction goes on with floors, and the warning
    quotes the server's refusal instead of a traceback."""
    vocab, words = ["bad", "great", "okay", "x", "y"], ["bad", "great", "okay"]
    with FakeOpenAI(vocab, top=2, bias="refuse") as srv:
        b = backend(srv.base_url)
        with pytest.warns(UserWarning, match=r"refused logit_bias \(HTTP 400: .*logit_bias is not supported"):
            feats = b.features(texts(4), TEMPLATE, words)
    assert b.bias_mode == "refused" and feats.queries == 4
    assert feats.stats["floored"] >= 4 and feats.stats.get("recovered", 0) == 0


def test_retries_500_and_429_then_succeeds():
    with FakeOpenAI(WORDS, fail={1: 500, 2: 429, 3: 503}) as srv:
        b = backend(srv.base_url, concurrency=1)
        feats = b.features(texts(3), TEMPLATE, WORDS)
        assert feats.queries == 3
        assert feats.stats["retries"] == 3 and feats.stats["failures"] == 3
        assert all(n == 1 for n in srv.seen.values())  # each prompt answered once


def test_non_retryable_error_fails_at_once_with_the_server_message():
    with FakeOpenAI(WORDS, fail={1: 400}) as srv:
        b = backend(srv.base_url, concurrency=1)
        with pytest.raises(RemoteError, match=r"HTTP 400.*injected 400"):
            b.features(texts(1), TEMPLATE, WORDS)
        assert srv.requests == 1


def test_absent_server_is_a_clear_error_not_a_hang():
    from edgetune.backends.server import free_port

    b = backend(f"http://127.0.0.1:{free_port()}/v1", max_retries=2, timeout=1.0)
    start = time.perf_counter()
    with pytest.raises(RemoteError, match=r"failed 3 times.*Is the server running"):
        b.features(texts(2), TEMPLATE, WORDS)
    assert time.perf_counter() - start < 30


def test_answers_are_cached_as_they_arrive_and_never_paid_twice(tmp_path):
    path = tmp_path / "f.sqlite"
    # every request from the 7th on fails (500): the first prompts' answers must survive the error
    with FakeOpenAI(WORDS, fail={i: 500 for i in range(7, 200)}) as srv:
        b = backend(srv.base_url, cache=FeatureCache(path), concurrency=1, max_retries=1)
        with pytest.raises(RemoteError):
            b.features(texts(8), TEMPLATE, WORDS)
        assert b.usage["queries"] == 3  # 3 prompts x 2 requests before the failures
    assert len(FeatureCache(path)) == 3
    with FakeOpenAI(WORDS) as srv:
        b = backend(srv.base_url, cache=FeatureCache(path))
        feats = b.features(texts(8), TEMPLATE, WORDS)
        assert feats.queries == 5 and feats.cache_hits == 3
        asked = {p for _, p in srv.seen}
    assert asked == {f"{e.text} It was" for e in texts(8)[3:]}
    b2 = backend("http://127.0.0.1:9/v1", cache=FeatureCache(path), max_retries=0)
    again = b2.features(texts(8), TEMPLATE, WORDS)  # no server needed: everything is cached
    assert again.queries == 0
    np.testing.assert_array_equal(again.scores, feats.scores)


def test_fault_proxy_drops_delays_and_500s_are_all_survived():
    with FakeOpenAI(WORDS) as srv:
        clean = backend(srv.base_url).features(texts(20), TEMPLATE, WORDS)
        with FaultProxy(srv.base_url, rate=0.3, delay=1.5, seed=1) as proxy:
            b = backend(proxy.base_url, timeout=0.5, concurrency=4)
            faulty = b.features(texts(20), TEMPLATE, WORDS)
    assert set(proxy.injected) == {"drop", "delay", "500"}
    assert sum(proxy.injected.values()) >= 0.2 * 40
    assert all(n == 1 for n in proxy.forwarded.values()) and len(proxy.forwarded) == 40
    assert b.usage["retries"] == sum(proxy.injected.values())
    np.testing.assert_array_equal(faulty.scores, clean.scores)
    np.testing.assert_array_equal(faulty.hidden, clean.hidden)


def test_rate_limit_spaces_requests():
    with FakeOpenAI(WORDS) as srv:
        b = backend(srv.base_url, rate_limit=20.0, hidden=False)
        start = time.perf_counter()
        b.features(texts(6), TEMPLATE, WORDS)
        assert time.perf_counter() - start >= 5 / 20.0


def test_template_and_words_are_checked_and_load_backend_builds_it():
    b = load_backend("fake", base_url="http://127.0.0.1:9/v1", cache=None)
    assert isinstance(b, OpenAIBackend) and b.identity == "openai:fake"
    from edgetune.errors import LabelWordError

    with pytest.raises(LabelWordError, match="must come last"):
        b.features(texts(1), "{mask} is the verdict on {text}", WORDS)
    with pytest.raises(LabelWordError, match="single words"):
        b.features(texts(1), TEMPLATE, ["very bad", "great"])


def test_cli_run_dect_over_a_server_and_predict(capsys, toy_dir, tmp_path):
    from edgetune.bench.records import read_results
    from edgetune.cli import main

    out_json = tmp_path / "r"
    with FakeOpenAI(["bad", "great", "fine"], top=3, dim=8) as srv:
        argv = ["run", "dect", "--backend", "openai", "--base-url", srv.base_url, "--model", "fake",
                "--train", str(toy_dir / "toy/train.jsonl"), "--test", str(toy_dir / "toy/test.jsonl"),
                "--template", "{text} In summary, it was {mask}", "--label-words", "negative:bad,positive:great",
                "--shots", "4", "--seeds", "0", "--no-progress", "-o", str(out_json),
                "--save-dir", str(tmp_path / "saved")]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "DecT" in out and "requests" in out and "prompt tokens" in out
        lines = read_results(out_json / "results.jsonl")
        assert {c["backend"] for c in lines if c["type"] == "cell"} == {"openai"}
        paid = [x for x in lines if x["type"] == "extraction"]
        assert sum(x["stats"]["requests"] for x in paid) == 2 * sum(x["queries"] for x in paid)
        saved = tmp_path / "saved" / "toy-dect-4shot-seed0"
        assert main(["predict", str(saved), "a wonderful film", "--no-progress"]) == 2  # needs --base-url
        capsys.readouterr()
        assert main(["predict", str(saved), "a wonderful film", "--base-url", srv.base_url, "--no-progress"]) == 0
        assert capsys.readouterr().out.strip() in ("negative", "positive")
    assert main(["run", "adept", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]) == 2


def test_a_bench_compares_named_backends_of_one_server_with_the_extraction_view(tmp_path, toy_dir):
    """``backends:`` names several ways of asking one server (here top_logprobs 2 with floors, and 2 with exact
    recovery through logit_bias); each label is a model of the grid, its extraction records carry the server's
    counters under that label, and the extraction view adds them up per label."""
    import yaml
    from conftest import toy_task_file

    from edgetune.bench.records import read_results
    from edgetune.cli import main

    task = toy_task_file(tmp_path, toy_dir)
    with FakeOpenAI(["bad", "great", "okay", "x", "y"], top=2, dim=8, bias="sample") as srv:
        spec = {"model": "fake", "base_url": srv.base_url, "top_logprobs": 2, "concurrency": 2}
        cfg = {"name": "variants", "models": ["floors", "exact"], "tasks": [str(task)], "shots": [2], "seeds": [0],
               "test_size": 4, "cache": "cold", "output": str(tmp_path / "out"), "methods": ["zeroshot", "dect"],
               "backends": {"floors": {**spec, "exact": "off"}, "exact": {**spec, "exact": "auto"}},
               "views": [{"extraction": "totals"}]}
        (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
        with pytest.warns(UserWarning, match="floor value"):
            assert main(["bench", str(tmp_path / "b.yaml"), "--no-progress"]) == 0
    lines = read_results(tmp_path / "out" / "results.jsonl")
    assert {(c["model"], c["method"]) for c in lines if c["type"] == "cell"} == {
        (m, x) for m in ("floors", "exact") for x in ("zeroshot", "dect")}
    stats = {m: [x["stats"] for x in lines if x["type"] == "extraction" and x["model"] == m]
             for m in ("floors", "exact")}
    floors, exact = stats["floors"], stats["exact"]
    assert sum(s.get("floored", 0) for s in floors) > 0 and not any(s.get("recovered") for s in floors)
    assert sum(s.get("recovered", 0) for s in exact) > 0 and not any(s.get("floored") for s in exact)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Extraction" in report and "| floors | toy |" in report and "| exact | toy |" in report


@pytest.mark.parametrize(("spec", "message"), [
    ({"server": {}}, "'model' name"), ({"model": "m", "server": {}, "base_url": "http://x"}, "not both"),
    ({"model": "m", "server": {"threads": 2}}, "server is a mapping"), ({"model": "m", "base_url": "ftp://x"}, "URL"),
    ({"model": "m", "top_logprobs": 5}, "unknown key"), ({"model": "m", "base_url": "http://x", "kind": "causal"},
                                                        "unknown key"),
])
def test_a_bad_backend_spec_is_one_line(spec, message):
    from edgetune.bench.config import BenchConfig
    from edgetune.errors import DataError

    with pytest.raises(DataError, match=message):
        BenchConfig.from_dict({"name": "x", "tasks": ["sst2"], "methods": ["dect"], "models": ["b"],
                               "backends": {"b": spec}})


def test_remote_options_are_the_backends_own():
    import inspect

    from edgetune.backends.remote import OpenAIBackend
    from edgetune.bench.config import REMOTE_OPTIONS

    taken = set(inspect.signature(OpenAIBackend.__init__).parameters)
    assert set(REMOTE_OPTIONS) - {"api_key_env"} <= taken


def test_vllm_style_tokenize_makes_missing_words_exact():
    """vLLM's /tokenize takes ``prompt`` (not llama.cpp's ``content``) and adds a BOS unless told not to: the
    backend asks it that way, so exact recovery works there too instead of silently falling back to floors."""
    vocab, words = ["bad", "great", "okay", "x", "y"], ["bad", "great", "okay"]
    with FakeOpenAI(vocab, top=2, bias="sample", engine="vllm") as srv:
        b = backend(srv.base_url)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no floor warning
            feats = b.features(texts(4), TEMPLATE, words)
    assert b.bias_mode == "sample" and feats.stats.get("floored", 0) == 0 and feats.stats["recovered"] >= 4
    for i, ex in enumerate(texts(4)):
        lp = FakeOpenAI.logprobs(f"{ex.text} It was", vocab)
        np.testing.assert_allclose(feats.scores[i], [lp[" " + w] for w in words], rtol=1e-5)


def test_embeddings_can_come_from_another_server_and_are_part_of_the_cache_key():
    """vLLM serves completions and embeddings from separate instances: the hidden representation is asked of
    ``embeddings_url`` (with ``embeddings_model``), the label-word scores of ``base_url``."""
    with FakeOpenAI(WORDS) as scores_srv, FakeOpenAI(WORDS, per_token=False) as embed_srv:
        b = backend(scores_srv.base_url, embeddings_url=embed_srv.base_url, embeddings_model="e5")
        feats = b.features(texts(3), TEMPLATE, WORDS)
        assert {p for p, _ in scores_srv.seen} == {"/v1/completions"}
        assert {p for p, _ in embed_srv.seen} == {"/v1/embeddings"}
        assert b.settings()["embeddings_model"] == "e5"
        same = backend(scores_srv.base_url)
        prompt = Template(TEMPLATE).render(texts(1)[0])
        assert same.key(prompt, WORDS) != b.key(prompt, WORDS)
    for i, ex in enumerate(texts(3)):
        np.testing.assert_allclose(feats.hidden[i], FakeOpenAI.vector(f"{ex.text} It was", 6), rtol=1e-6)


def test_a_dry_run_through_a_server_prices_the_run_and_asks_nothing(tmp_path, toy_dir, capsys):
    from conftest import toy_task_file

    from edgetune.cli import main

    task = toy_task_file(tmp_path, toy_dir)
    with FakeOpenAI(["bad", "great"]) as srv:
        code = main(["run", "dect", "--task", str(task), "--backend", "openai", "--base-url", srv.base_url,
                     "--model", "fake", "--shots", "2", "--seeds", "0", "1", "--no-progress", "--dry-run",
                     "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "out")])
        assert srv.requests == 0
    out = capsys.readouterr().out
    assert code == 0 and "dry run, nothing asked" in out and "requests to" in out
    assert "10 test" in out and not (tmp_path / "out" / "results.jsonl").exists()


def _raw(prompt: str, vocab: list[str], words: list[str]) -> list[float]:
    lp = FakeOpenAI.logprobs(prompt, vocab)
    return [lp[" " + w] for w in words]


def test_chat_completions_score_the_answers_first_token_with_or_without_its_space():
    """OpenAI's chat shape (``logprobs=true``, ``top_logprobs`` ≤ 20, ``choices[0].logprobs.content[0]``): the
    answer's first token has no leading space and is still the label word; ``logit_bias`` recovers the rest."""
    vocab, words = ["bad", "great", "okay", "x", "y"], ["bad", "great", "okay"]
    with FakeOpenAI(vocab, top=2, bias="sample", engine="openai", normalised=True, per_token=False) as srv:
        with pytest.raises(ModelError, match="at most 20"):
            backend(srv.base_url.replace("127.0.0.1", "api.openai.com"), engine="chat", top_logprobs=50)
        b = backend(srv.base_url, engine="chat")
        assert b.top_logprobs == 20 and b.settings()["engine"] == "chat"
        with pytest.warns(UserWarning, match="floor value"):  # OpenAI has no tokenize endpoint: floors, counted
            feats = b.features(texts(4), TEMPLATE, words)
        assert {p for p, _ in srv.seen} >= {"/v1/chat/completions", "/v1/embeddings"}
    assert b.bias_mode == "none" and feats.stats["floored"] >= 4
    assert feats.stats["normalised"] == 4  # every vector came back unit-length, and the run says so
    found = 0
    for i, ex in enumerate(texts(4)):
        raw = _raw(f"{ex.text} It was", vocab, words)
        top = sorted(_raw(f"{ex.text} It was", vocab, vocab), reverse=True)[:2]
        for s, r in zip(feats.scores[i], raw, strict=True):  # in the top: exact, though sent without its space
            assert np.isclose(s, r) if r in top else s == pytest.approx(min(top))
            found += r in top
    assert found >= 2


def test_openais_legacy_completions_cap_is_five_and_known_before_any_request():
    with FakeOpenAI(WORDS, engine="openai") as srv:
        hosted = srv.base_url.replace("127.0.0.1", "api.openai.com")
        assert backend(hosted).top_logprobs == 5
        with pytest.raises(ModelError, match="at most 5"):
            backend(hosted, top_logprobs=20)
        with pytest.raises(RemoteError, match=r"HTTP 400.*at most 5"):  # a server's own refusal stays one line
            backend(srv.base_url, top_logprobs=20, max_retries=0).features(texts(1), TEMPLATE, WORDS)
        assert backend(srv.base_url, top_logprobs=5).features(texts(2), TEMPLATE, WORDS).queries == 2


def test_tgi_generate_with_exact_scores_from_the_prompts_own_logprobs():
    """text-generation-inference: ``/generate`` with ``top_n_tokens`` (5 by default, a 422 above the launcher's
    cap); a label word outside the top is recovered exactly from ``decoder_input_details``; the hidden
    representation comes from a text-embeddings-inference server (TGI serves none)."""
    vocab, words = ["bad", "great", "okay", "x", "y", "z", "w"], ["bad", "great", "okay"]
    with FakeOpenAI(vocab, top=2, engine="tgi") as srv, FakeOpenAI(WORDS, per_token=False, normalised=True) as tei:
        with pytest.raises(ModelError, match="serves no embeddings"):
            backend(srv.base_url, engine="tgi")
        with pytest.raises(RemoteError, match=r"422.*top_n_tokens"):
            backend(srv.base_url, engine="tgi", hidden=False, max_retries=0).features(texts(1), TEMPLATE, words)
        b = backend(srv.base_url, engine="tgi", top_logprobs=2, embeddings_url=tei.base_url)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing floored
            feats = b.features(texts(5), TEMPLATE, words)
        assert {p for p, _ in srv.seen} == {"/generate"} and b.bias_mode == "prefill"
    assert feats.stats["recovered"] >= 5 and feats.stats.get("floored", 0) == 0
    for i, ex in enumerate(texts(5)):
        np.testing.assert_allclose(feats.scores[i], _raw(f"{ex.text} It was", vocab, words), rtol=1e-6)
    assert feats.stats["normalised"] == 5


def test_ollama_generate_scores_and_says_why_missing_words_are_floored():
    vocab, words = ["bad", "great", "okay", "x", "y"], ["bad", "great", "okay"]
    with FakeOpenAI(vocab, top=2, engine="ollama", per_token=False) as srv:
        with pytest.raises(ModelError, match="at most 20"):
            backend(srv.base_url, engine="ollama", top_logprobs=21)
        b = backend(srv.base_url, engine="ollama")
        with pytest.warns(UserWarning, match="Ollama offers no exact way"):
            feats = b.features(texts(4), TEMPLATE, words)
        assert {p for p, _ in srv.seen} == {"/api/generate", "/v1/embeddings"}
    assert feats.stats["prompt_tokens"] > 0 and feats.stats["floored"] >= 4
    for i, ex in enumerate(texts(4)):
        raw = _raw(f"{ex.text} It was", vocab, words)
        top = sorted(_raw(f"{ex.text} It was", vocab, vocab), reverse=True)[:2]
        for s, r in zip(feats.scores[i], raw, strict=True):
            assert np.isclose(s, r) if r in top else s == pytest.approx(min(top))


def test_the_engine_is_in_the_cache_key_and_the_command_line(tmp_path, toy_dir, capsys):
    from conftest import toy_task_file

    from edgetune.backends.remote import ENGINES
    from edgetune.cli import DTYPES, main
    from edgetune.cli import ENGINES as CLI_ENGINES

    assert CLI_ENGINES == ENGINES and DTYPES
    task = toy_task_file(tmp_path, toy_dir)
    prompt = Template(TEMPLATE).render(texts(1)[0])
    with FakeOpenAI(WORDS, engine="ollama", per_token=False) as srv:
        plain, ollama = backend(srv.base_url), backend(srv.base_url, engine="ollama")
        assert plain.key(prompt, WORDS) != ollama.key(prompt, WORDS) and "engine" not in plain.settings()
        assert OpenAIBackend.options_from_settings(ollama.settings())["engine"] == "ollama"
        assert main(["run", "dect", "--backend", "openai", "--base-url", srv.base_url, "--model", "fake",
                     "--engine", "ollama", "--task", str(task), "--shots", "2", "--seeds", "0",
                     "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
        assert {p for p, _ in srv.seen} == {"/api/generate", "/v1/embeddings"}
        capsys.readouterr()
        assert main(["run", "dect", "--backend", "openai", "--base-url", srv.base_url, "--model", "fake",
                     "--engine", "ollama", "--task", str(task), "--shots", "2", "--seeds", "1", "--dry-run",
                     "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
        assert "Ollama has no exact way" in " ".join(capsys.readouterr().out.split())
    assert (tmp_path / "out" / "results.jsonl").exists()
    assert main(["run", "dect", "--engine", "tgi", "--task", str(task), "--shots", "2", "--no-progress"]) == 2
    assert "--engine" in capsys.readouterr().err


def test_a_bench_server_backend_asks_one_request_at_a_time_unless_told(monkeypatch, tmp_path):
    """llama-cpp-python's server answers one request at a time (more in flight only contend:
    benchmarks/results/server_speed.md), so a bench ``server:`` backend defaults to concurrency 1."""
    import contextlib

    from edgetune.backends import server as server_module
    from edgetune.bench import runner
    from edgetune.bench.config import BenchConfig

    class Started:
        def __init__(self, model, **options):
            self.base_url = "http://127.0.0.1:9/v1"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(server_module, "LlamaServer", Started)
    for extra, expected in (({}, 1), ({"concurrency": 6}, 6)):
        config = BenchConfig.from_dict({"name": "s", "tasks": ["sst2"], "models": ["srv"], "methods": ["dect"],
                                        "backends": {"srv": {"model": "smollm2-135m", "server": {}, **extra}}})
        with contextlib.ExitStack() as stack:
            cache = runner._LazyCache(tmp_path / "f.sqlite", FeatureCache(None))
            got = runner._backend(config, "srv", cache, False, stack, {})
        assert isinstance(got, OpenAIBackend) and got.concurrency == expected
