"""Reduced precision and thread counts: how ``dtype="auto"`` decides, that a half-precision model extracts and trains
(float32 trainable weights beside a bfloat16 body), and that the format is part of every cache key and saved model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgetune.backends import LocalBackend, precision
from edgetune.cli import DTYPES, main
from edgetune.data import Template
from edgetune.errors import ModelError
from edgetune.methods import ADePT, DecT, FineTune, LoRA, load
from edgetune.methods.core.optim import BF16AdamW, adamw, stochastic_round_

QUICK = {"steps": 3, "batch_size": 4, "eval_every": 1, "progress": False}


def test_the_command_line_offers_the_formats_the_backends_know():
    assert DTYPES == precision.DTYPES


def test_named_formats_resolve_and_bad_ones_are_one_line_errors():
    cpu = torch.device("cpu")
    assert precision.resolve_dtype("float32", cpu) == torch.float32
    assert precision.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype 'fp8'"):
        precision.resolve_dtype("fp8", cpu)
    with pytest.raises(ModelError, match="float16 on a CPU"):
        precision.resolve_dtype("float16", cpu)


@pytest.fixture
def fake_cpu(monkeypatch):
    """A CPU with the given bfloat16 flags and measured rates; counts the probes."""
    probes = []

    def make(flags: set[str] | None, fp32: float = 100.0, bf16: float = 100.0):
        monkeypatch.setattr(precision, "_cpuinfo", lambda: ("Test CPU", flags))

        def rate(dtype, size=1024, repeats=3, device="cpu"):
            probes.append(dtype)
            return bf16 if dtype == torch.bfloat16 else fp32

        monkeypatch.setattr(precision, "matmul_rate", rate)
        return probes

    return make


def test_auto_is_float32_without_probing_on_a_cpu_that_lists_no_bfloat16_unit(fake_cpu):
    probes = fake_cpu(set())
    assert precision.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert probes == []


@pytest.mark.parametrize(("bf16", "expected"), [(600.0, torch.bfloat16), (120.0, torch.float32)])
def test_auto_takes_bfloat16_only_where_it_measures_faster_and_probes_once(fake_cpu, tmp_path, bf16, expected):
    probes = fake_cpu({"avx512_bf16"}, fp32=100.0, bf16=bf16)
    for _ in range(3):
        assert precision.resolve_dtype("auto", torch.device("cpu"), cache_root=tmp_path) == expected
    assert len(probes) == 2  # one fp32 and one bf16 product, the first time only
    (entry,) = json.loads((tmp_path / "hardware.json").read_text()).values()
    assert entry["bf16_speedup"] == bf16 / 100.0


def test_a_damaged_hardware_file_is_measured_again(fake_cpu, tmp_path):
    probes = fake_cpu({"amx_bf16"}, bf16=600.0)
    (tmp_path / "hardware.json").write_text("{not json")
    assert precision.cpu_prefers_bf16(tmp_path)
    assert len(probes) == 2


def _close(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between matching rows."""
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def test_a_bfloat16_model_reads_prompts_like_the_float32_one_under_its_own_cache_key(make_backend, toy_task):
    data = toy_task.load("test")
    template = Template(toy_task.template)
    full, half = make_backend("causal"), make_backend("causal", dtype="bfloat16")
    assert half.dtype == torch.bfloat16 and half.settings()["dtype"] == "bfloat16"
    assert "dtype" not in full.settings()  # float32 keeps the cache keys features had before formats were a choice
    prompt = template.render(data[0])
    assert full.key(prompt, toy_task.words) != half.key(prompt, toy_task.words)
    a, b = full.features(data, template, toy_task.words), half.features(data, template, toy_task.words)
    assert b.hidden.dtype == np.float32
    assert _close(a.hidden, b.hidden) > 0.99
    assert np.abs(a.scores - b.scores).max() < 0.1 * np.abs(a.scores).max()


def test_stochastic_rounding_is_unbiased_and_lands_on_a_neighbouring_bfloat16():
    value = torch.full((20000,), 1.0 + 3e-3)  # between the bfloat16 neighbours 1.0 and 1.0078125
    target = torch.empty(20000, dtype=torch.bfloat16)
    stochastic_round_(target, value, torch.Generator().manual_seed(0))
    assert set(target.float().unique().tolist()) == {1.0, 1.0078125}
    assert abs(float(target.float().mean()) - (1.0 + 3e-3)) < 2e-4  # nearest rounding would give 1.0 every time
    exact = torch.tensor([0.5, -2.0, 3.140625])  # already bfloat16 values stay put
    stochastic_round_(target[:3], exact)
    assert target[:3].float().tolist() == exact.tolist()


def test_bf16_adamw_matches_torch_adamw_on_float32_weights_and_keeps_small_bfloat16_updates():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(32, 8))
    b = torch.nn.Parameter(a.detach().clone())
    ours, theirs = BF16AdamW([a], lr=1e-2, weight_decay=0.1), torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(32, 8)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert torch.allclose(a, b, atol=1e-6)
    assert isinstance(adamw([{"params": [a]}], 0.0), torch.optim.AdamW)
    # at a fine-tuning rate every update is below half a bfloat16 step: rounding to nearest loses them all
    w = torch.nn.Parameter(torch.full((4096,), 0.05, dtype=torch.bfloat16))
    plain = torch.nn.Parameter(w.detach().clone())
    opt, naive = adamw([{"params": [w]}], 0.0), torch.optim.AdamW([plain], lr=1e-5, weight_decay=0.0)
    opt.param_groups[0]["lr"] = 1e-5
    assert isinstance(opt, BF16AdamW)
    for _ in range(50):
        w.grad = torch.ones_like(w)
        plain.grad = torch.ones_like(plain)
        opt.step()
        naive.step()
    assert torch.equal(plain.detach(), torch.full_like(plain, 0.05))  # nothing moved
    moved = 0.05 - float(w.detach().float().mean())  # 50 steps of ≈ 1e-5 each: ≈ 5e-4 on average
    assert 3e-4 < moved < 7e-4
    assert opt.state[w]["exp_avg"].dtype == torch.float32


def test_full_fine_tuning_of_a_bfloat16_model_can_train_without_a_float32_copy(make_backend, toy_task):
    backend = make_backend("causal", dtype="bfloat16")
    sample = toy_task.sample(4, seed=0)
    half = FineTune(backend, weights="model", **QUICK).fit(sample)
    assert all(p.dtype == torch.bfloat16 for p in half.module_.frozen.parameters())
    assert np.isfinite(half.history_["loss"]).all()
    before = dict(backend.model.named_parameters())
    changed = [n for n, p in half.module_.frozen.named_parameters() if not torch.equal(p, before[n])]
    assert changed  # it trained (the backend's own model is untouched: it is a copy)
    full = FineTune(backend, **QUICK).fit(sample)
    assert all(p.dtype == torch.float32 for p in full.module_.frozen.parameters())
    assert np.isfinite(half.decision_function(toy_task.load("test"))).all()


@pytest.mark.parametrize("cls", [ADePT, LoRA])
def test_input_edge_training_keeps_float32_weights_beside_a_bfloat16_body(make_backend, toy_task, cls):
    backend = make_backend("causal", dtype="bfloat16")
    extra = {"prompt_tokens": 4, "budget_tokens": 8} if cls is ADePT else {}
    m = cls(backend, **extra, **QUICK).fit(toy_task.sample(4, seed=0))
    trained = [p for p in m.module_.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert precision.model_dtype(m.module_.frozen) == torch.bfloat16
    assert m.history_["loss"] and np.isfinite(m.history_["loss"]).all()
    scores = m.decision_function(toy_task.load("test"))
    assert np.isfinite(scores).all() and scores.dtype != np.dtype("float16")


def test_threads_are_set_while_extracting_and_restored_after(make_backend, toy_task, monkeypatch):
    backend = make_backend("causal", threads=1)
    seen = []
    run = LocalBackend._run_batch

    def spy(self, batch, label_ids):
        seen.append(torch.get_num_threads())
        return run(self, batch, label_ids)

    monkeypatch.setattr(LocalBackend, "_run_batch", spy)
    before = torch.get_num_threads()
    backend.features(toy_task.load("test"), Template(toy_task.template), toy_task.words)
    assert seen and set(seen) == {1} and torch.get_num_threads() == before
    with pytest.raises(ModelError, match="threads must be"):
        make_backend("causal", threads=0)


def test_a_model_loaded_by_name_in_bfloat16_is_saved_and_reloaded_in_bfloat16(tiny_model_dir, toy_task, tmp_path):
    backend = LocalBackend.load(str(tiny_model_dir), progress=False, dtype="bfloat16", cache=None)
    assert backend.dtype == torch.bfloat16
    m = DecT(backend).fit(toy_task.sample(4, seed=0))
    path = m.save(tmp_path / "saved")
    again = load(path)
    assert again.backend.dtype == torch.bfloat16
    test = toy_task.load("test")
    np.testing.assert_allclose(again.decision_function(test), m.decision_function(test), atol=1e-5)


def test_device_map_loads_the_same_model(tiny_model_dir, toy_task):
    data, template = toy_task.load("test"), Template(toy_task.template)
    placed = LocalBackend.load(str(tiny_model_dir), progress=False, dtype="float32", device_map="auto", cache=None)
    plain = LocalBackend.load(str(tiny_model_dir), progress=False, dtype="float32", cache=None)
    np.testing.assert_allclose(placed.features(data, template, toy_task.words).scores,
                               plain.features(data, template, toy_task.words).scores, atol=1e-5)
    with pytest.raises(ModelError, match="either device or device_map"):
        LocalBackend.load(str(tiny_model_dir), progress=False, device="cpu", device_map="auto")


def test_the_command_line_takes_a_format_and_refuses_what_cannot_run(tiny_model_dir, toy_dir, capsys):
    common = ["--model", str(tiny_model_dir), "--no-progress", "--data-dir", str(toy_dir), "--train",
              str(toy_dir / "toy/train.jsonl"), "--test", str(toy_dir / "toy/test.jsonl"),
              "--label-words", "negative:bad,positive:great", "--shots", "4",
              "--template", "{text} In summary, it was {mask}"]
    assert main(["run", "dect", *common, "--dtype", "bfloat16", "--model-threads", "1"]) == 0
    capsys.readouterr()
    assert main(["run", "dect", *common, "--dtype", "float16"]) == 2
    assert "float16 on a CPU" in capsys.readouterr().err
    assert main(["run", "dect", *common, "--device", "cpu", "--device-map", "auto"]) == 2
    assert "either --device or --device-map" in capsys.readouterr().err


def test_the_thread_chooser_tries_each_count_on_real_batches_then_keeps_the_fastest_and_rechecks():
    chooser = precision.ThreadChooser(cores=4, recheck=4)
    assert chooser.candidates == [4, 2, 1]
    speed = {4: 100.0, 2: 300.0, 1: 200.0}  # tokens per second: a busy machine where half the cores win
    used = []
    for _ in range(12):
        n = chooser.next()
        used.append(n)
        chooser.record(n, 600, 600 / speed[n])
    assert used[:3] == [4, 2, 1] and chooser.chosen == 2
    assert used.count(2) >= 7 and set(used[3:]) == {2, 4, 1}  # mostly the fastest; the others rechecked
    speed[4] = 1000.0  # the machine went quiet: the next recheck of 4 threads finds it
    for _ in range(12):
        n = chooser.next()
        chooser.record(n, 600, 600 / speed[n])
    assert chooser.chosen == 4


def test_auto_threads_on_a_backend_record_real_batches(make_backend, toy_task):
    backend = make_backend("causal", threads="auto", batch_size=2)
    before = torch.get_num_threads()
    backend.features(toy_task.load("test"), Template(toy_task.template), toy_task.words)
    assert backend.thread_chooser.batches == 5 and torch.get_num_threads() == before
