"""A bench grid on several processes (`--workers N`) and as Ray tasks (`--ray`): the same records as a serial run,
each written once by the driver, resumable as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import toy_task_file

from edgetune.bench.config import BenchConfig
from edgetune.bench.records import read_results
from edgetune.bench.workers import units
from edgetune.cli import main

#: what must not depend on where a cell ran
SAME = ("accuracy", "macro_f1", "balanced_accuracy", "confusion", "queries", "trainable_params", "n_train", "n_test")


def _config(tmp_path, toy_dir, tiny_model_dir, out: str) -> str:
    task = toy_task_file(tmp_path, toy_dir)
    cfg = {"name": "grid", "models": [str(tiny_model_dir)], "tasks": [str(task)], "shots": [2, 4], "seeds": [0, 1],
           "test_size": 8, "output": str(tmp_path / out),
           "methods": ["calibrated", "dect", "knn", {"name": "pt", "params": {"steps": 2, "prompt_tokens": 2,
                                                                              "batch_size": 2}}]}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _cells(path) -> dict:
    lines = read_results(path)
    got = [c for c in lines if c["type"] == "cell"]
    keys = [(c["shots"], c["seed"], c["method"]) for c in got]
    assert len(keys) == len(set(keys))  # each cell recorded once
    return {k: c for k, c in zip(keys, got, strict=True)}


def test_units_are_samples_with_every_method_in_grid_order(tmp_path, toy_dir, tiny_model_dir):
    config = BenchConfig.from_yaml(_config(tmp_path, toy_dir, tiny_model_dir, "u"))
    todo = config.cells()
    groups = units(todo)
    assert len(groups) == 2 * 2  # shots x seeds
    assert [n for g in groups for n, _ in g] == sorted(n for g in groups for n, _ in g)  # numbered as serially
    for g in groups:
        assert [c[4].label for _, c in g] == ["calibrated", "dect", "knn", "pt"]
        assert len({(c[2], c[3]) for _, c in g}) == 1


def test_a_model_behind_a_server_is_one_unit_per_task_so_no_answer_is_paid_twice(tmp_path, toy_dir,
                                                                                  tiny_model_dir):
    """Samples and the test subset of a task share prompts: two workers asking a paid server for the same uncached
    prompt would both pay, so a served model's task runs in one worker (the cache then serves the repeats)."""
    path = _config(tmp_path, toy_dir, tiny_model_dir, "served")
    raw = yaml.safe_load(Path(path).read_text())
    raw["models"] = [str(tiny_model_dir), "api"]
    raw["backends"] = {"api": {"model": "smollm2-135m", "base_url": "http://127.0.0.1:9/v1"}}
    config = BenchConfig.from_dict(raw)
    groups = units(config.cells(), config)
    served = [g for g in groups if g[0][1][0] == "api"]
    assert len(served) == 1 and len(served[0]) == 2 * 2 * 4  # every sample and method of the one task
    assert len(groups) - len(served) == 2 * 2  # the in-process model: one unit per sample


@pytest.mark.parametrize("how", [["--workers", "2"], ["--ray"]], ids=["workers", "ray"])
def test_a_grid_on_several_workers_records_what_a_serial_run_records(tmp_path, toy_dir, tiny_model_dir, how):
    if how == ["--ray"]:
        pytest.importorskip("ray")
    serial = _config(tmp_path, toy_dir, tiny_model_dir, "serial")
    assert main(["bench", serial, "--no-progress", "--no-plots"]) == 0
    parallel = _config(tmp_path, toy_dir, tiny_model_dir, "parallel")
    assert main(["bench", parallel, "--no-progress", "--no-plots", *how]) == 0
    one, many = _cells(tmp_path / "serial/results.jsonl"), _cells(tmp_path / "parallel/results.jsonl")
    assert one.keys() == many.keys() and len(one) == 2 * 2 * 4
    for key, cell in one.items():
        if cell["edge"] == "output":  # decoders on the same features: exactly the same
            assert {k: many[key][k] for k in SAME} == {k: cell[k] for k in SAME}, key
        else:
            assert many[key]["queries"] == cell["queries"] and many[key]["steps"] == cell["steps"]
    lines = read_results(tmp_path / "parallel/results.jsonl")
    assert len({x["run"] for x in lines}) == 1  # written by the driver alone, as one run
    train = [(x["shots"], x["seed"]) for x in lines if x["type"] == "extraction" and x["split"] == "train"]
    # at most one paid extraction per sample, beside the cells that read it (fewer when another sample of the toy
    # task had already paid for all its prompts: which runs first depends on the workers)
    assert 1 <= len(train) <= 4 and len(set(train)) == len(train)
    # a second invocation has nothing left to do
    assert main(["bench", parallel, "--no-progress", "--no-plots", *how]) == 0
    assert len(_cells(tmp_path / "parallel/results.jsonl")) == len(one)


def test_workers_and_ray_together_or_zero_workers_are_one_line(tmp_path, toy_dir, tiny_model_dir, capsys):
    path = _config(tmp_path, toy_dir, tiny_model_dir, "bad")
    assert main(["bench", path, "--workers", "2", "--ray"]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["bench", path, "--workers", "0"])
    assert exit_.value.code == 2 and "--workers: expected a whole number" in capsys.readouterr().err


def test_bulk_prediction_with_ray_data_equals_prediction_in_process(tmp_path, toy_dir, tiny_model_dir, capsys):
    pytest.importorskip("ray")
    import json

    from edgetune.backends import LocalBackend
    from edgetune.data import Task

    task = Task("toy", ("negative", "positive"), "{text} In summary, it was {mask}",
                {"negative": "bad", "positive": "great"}, data_dir=str(toy_dir))
    from edgetune.methods import DecT

    backend = LocalBackend.load(str(tiny_model_dir), progress=False)
    saved = DecT(backend).fit(task.sample(4, seed=0)).save(tmp_path / "saved")
    rows = [{"text": f"{w} film number {i}"} for i in range(30) for w in ("a great", "a bad")]
    (tmp_path / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["predict", str(saved), "--file", str(tmp_path / "big.jsonl"), "--json", "--no-progress"]
    assert main(common) == 0
    here = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main([*common, "--ray"]) == 0
    there = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in there] == [r["text"] for r in rows]  # in input order
    assert [r["label"] for r in there] == [r["label"] for r in here]
    for a, b in zip(here, there, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
