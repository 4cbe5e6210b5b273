"""The command line, on a tiny model saved as a local folder and a toy task on disk."""

import json

import pytest

from edgetune.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def common(tiny_model_dir, toy_dir):
    return ["--model", tiny_model_dir, "--no-progress", "--data-dir", toy_dir]


def test_run_dect_prints_table_and_writes_json(capsys, common, tmp_path):
    # "toy" is not a registry task, so bring it as files; --data-dir is ignored for those.
    out_json = tmp_path / "r.json"
    code, out, err = run(capsys, "run", "dect", "--train", common[4] / "toy/train.jsonl",
                         "--test", common[4] / "toy/test.jsonl", "--template", "{text} In summary, it was {mask}",
                         "--label-words", "negative:bad,positive:great", "--shots", 4, "--seeds", 0, 1,
                         "--model", common[1], "--no-progress", "-o", out_json, "--save-dir", tmp_path / "saved")
    assert code == 0, err
    for name in ("zero-shot", "calibrated", "linear probe", "DecT", "mean ± std", "model queries"):
        assert name in out
    data = json.loads(out_json.read_text())
    assert data[0]["shots"] == 4 and data[0]["seeds"] == [0, 1]
    assert {r["method"] for r in data[0]["results"]} == {"zeroshot", "calibrated", "linear_probe", "dect"}
    assert data[0]["extraction"]["queries"] > 0
    saved = tmp_path / "saved" / "train-4shot-seed0"
    code, out, err = run(capsys, "predict", saved, "a wonderful film", "a dull mess", "--no-progress")
    assert code == 0, err
    assert all(line in ("negative", "positive") for line in out.split())
    assert len(out.split()) == 2
    code, out, _ = run(capsys, "predict", saved, "great", "--json", "--no-progress")
    row = json.loads(out)
    assert set(row["probabilities"]) == {"negative", "positive"}
    # A second identical run is served from the cache.
    code, out, _ = run(capsys, "run", "dect", "--train", common[4] / "toy/train.jsonl",
                       "--test", common[4] / "toy/test.jsonl", "--template", "{text} In summary, it was {mask}",
                       "--label-words", "negative:bad,positive:great", "--shots", 4, "--seeds", 0, 1,
                       "--model", common[1], "--no-progress", "-o", out_json)
    assert json.loads(out_json.read_text())[0]["extraction"]["queries"] == 0


def test_registry_task_from_data_dir(capsys, common, tmp_path):
    from conftest import write_toy

    write_toy(common[4], "sst2")  # a stand-in sst2 folder in the toy data dir
    code, out, err = run(capsys, "run", "dect", "--task", "sst2", "--shots", 2, "--seeds", 0, *common,
                         "-o", tmp_path / "r.json")
    assert code == 0, err
    assert "sst2" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "dect", "--task", "sst2", "--data-dir", "/no/such/dir"], "data directory"),
        (["run", "dect", "--task", "nope"], "unknown task"),
        (["run", "dect", "--task", "sst2", "--label-words", "negative:unbelievableness,positive:great"],
         "not one"),
        (["run", "dect", "--task", "sst2", "--shots", 50], "fewer than --shots"),
        (["predict", "/no/such/model", "x"], "not a saved edgetune model"),
        (["run", "dect", "--task", "sst2", "--device", "nonsense"], "unknown device"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(capsys, common, args, message, tmp_path):
    from conftest import write_toy

    write_toy(common[4], "sst2")
    extra = [] if args[0] == "predict" else ["--model", common[1], "--no-progress"] + (
        [] if "--data-dir" in args else ["--data-dir", common[4]])
    code, _, err = run(capsys, *args, *extra, "-o", tmp_path / "r.json") if args[0] == "run" else run(
        capsys, *args)
    assert code == 2
    assert message in err and err.startswith("error:")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_unknown_label_in_data_file(capsys, common, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n')
    code, _, err = run(capsys, "run", "dect", "--train", bad, "--test", bad, "--template", "{text} It was {mask}",
                       "--label-words", "negative:bad,positive:great", "--model", common[1], "--no-progress")
    assert code == 2 and "unknown label 'neutral'" in err and "bad.jsonl:2" in err


def test_predict_with_another_model_is_refused(capsys, common, tmp_path, tokenizer):
    from conftest import tiny_model

    run(capsys, "run", "dect", "--train", common[4] / "toy/train.jsonl", "--test", common[4] / "toy/test.jsonl",
        "--template", "{text} It was {mask}", "--label-words", "negative:bad,positive:great", "--shots", 2,
        "--seeds", 0, "--model", common[1], "--no-progress", "-o", tmp_path / "r.json",
        "--save-dir", tmp_path / "s")
    other = tmp_path / "other-model"
    tiny_model("causal", tokenizer.vocab_size, seed=5).save_pretrained(other)
    tokenizer.save_pretrained(other)
    code, _, err = run(capsys, "predict", tmp_path / "s" / "train-2shot-seed0", "x", "--model", other,
                       "--no-progress")
    assert code == 2 and "trained on model" in err


def test_tasks_and_models_listings(capsys, toy_dir):
    code, out, _ = run(capsys, "tasks", "--data-dir", toy_dir)
    assert code == 0 and "agnews" in out and "politics" in out
    code, out, _ = run(capsys, "models")
    assert code == 0 and "smollm2-135m" in out and "minilm-l6" in out


def test_help_mentions_the_essentials(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in ("--task", "--shots", "--seeds", "--model", "--test-size", "--label-words", "--save-dir"):
        assert flag in out


@pytest.mark.parametrize("method", ["adept", "dept", "pt", "lora", "bbt"])
def test_run_input_edge_method_and_predict(capsys, common, tmp_path, method):
    out_json = tmp_path / "r.json"
    knobs = ["--budget", 3, "--popsize", 3, "--intrinsic-dim", 6] if method == "bbt" else []
    code, out, err = run(capsys, "run", method, "--train", common[4] / "toy/train.jsonl",
                         "--test", common[4] / "toy/test.jsonl", "--template", "{text} In summary, it was {mask}",
                         "--label-words", "negative:bad,positive:great", "--shots", 2, "--seeds", 0,
                         "--steps", 3, "--train-batch-size", 2, "--budget-tokens", 20, "--prompt-tokens", 4,
                         *knobs, "--model", common[1], "--no-progress", "-o", out_json, "--save-dir", tmp_path / "s")
    assert code == 0, err
    assert "trainable params" in out and "training steps: 3" in out
    data = json.loads(out_json.read_text())
    r = data[0]["results"][0]
    assert r["method"] == method and r["steps"] == 3 and r["trainable_params"] > 0
    assert r["queries"] >= 3 * 2
    code, out, err = run(capsys, "predict", tmp_path / "s" / f"train-{method}-2shot-seed0", "a fine film",
                         "--no-progress")
    assert code == 0, err
    assert out.strip() in ("negative", "positive")
