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


def cells_of(folder):
    from edgetune.bench.records import read_results

    return [x for x in read_results(folder / "results.jsonl") if x["type"] == "cell"]


def test_run_dect_prints_table_and_writes_records(capsys, common, tmp_path):
    # "toy" is not a registry task, so bring it as files; --data-dir is ignored for those.
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "run", "dect", "--train", common[4] / "toy/train.jsonl",
                            "--test", common[4] / "toy/test.jsonl", "--template", "{text} In summary, it was {mask}",
                            "--label-words", "negative:bad,positive:great", "--shots", 4, "--seeds", 0, 1,
                            "--model", common[1], "--no-progress", "-o", out, "--save-dir", tmp_path / "saved")
    assert code == 0, err
    for name in ("zero-shot", "calibrated", "linear probe", "DecT", "mean ± std", "model queries"):
        assert name in stdout
    assert "toy · 4-shot" in stdout  # named after the folder holding --train, not the file's stem
    cells = cells_of(out)
    assert {c["shots"] for c in cells} == {4} and {c["seed"] for c in cells} == {0, 1}
    assert {c["method"] for c in cells} == {"zeroshot", "calibrated", "linear_probe", "dect"}
    assert (out / "report.md").is_file()
    saved = tmp_path / "saved" / "toy-dect-4shot-seed0"
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["toy-dect-4shot-seed0", "toy-dect-4shot-seed1"]
    code, stdout, err = run(capsys, "predict", saved, "a wonderful film", "a dull mess", "--no-progress")
    assert code == 0, err
    assert all(line in ("negative", "positive") for line in stdout.split())
    assert len(stdout.split()) == 2
    code, stdout, _ = run(capsys, "predict", saved, "great", "--json", "--no-progress")
    row = json.loads(stdout)
    assert set(row["probabilities"]) == {"negative", "positive"}
    # A second identical run is served from the cache: the same numbers, no model queries.
    code, stdout, _ = run(capsys, "run", "dect", "--train", common[4] / "toy/train.jsonl",
                          "--test", common[4] / "toy/test.jsonl", "--template", "{text} In summary, it was {mask}",
                          "--label-words", "negative:bad,positive:great", "--shots", 4, "--seeds", 0, 1, "--name",
                          "mine", "--model", common[1], "--no-progress", "-o", out)
    everything = cells_of(out)
    again = [c for c in everything if c["task"] == "mine"]
    assert "model queries: 0" in stdout and "mine · 4-shot" in stdout
    assert [c["accuracy"] for c in again] == [c["accuracy"] for c in cells]
    assert everything[: len(cells)] == cells  # the first run's records are kept: results are only appended


def test_label_names_are_the_words_when_none_are_given(capsys, common, tmp_path):
    """Intent-style label names, no --label-words: labels read from the train file, words derived and shown,
    several-token names scored as sequences by the causal model."""
    rows = [json.loads(x) for x in (common[4] / "toy/train.jsonl").read_text().splitlines()]
    data = tmp_path / "intents" / "train.jsonl"
    data.parent.mkdir()
    names = {"positive": "praiseTheFilm", "negative": "pan_the_film"}
    data.write_text("".join(json.dumps({**r, "label": names[r["label"]]}) + "\n" for r in rows))
    code, _, err = run(capsys, "run", "dect", "--train", data, "--test", data, "--template",
                            "{text} The reviewer wants to {mask}", "--shots", 2, "--seeds", 0, "--model", common[1],
                            "--no-progress", "-o", tmp_path / "o")
    assert code == 0, err
    assert "read from the label names: pan_the_film → 'pan the film', praiseTheFilm → 'praise the film'" in err
    assert {c["method"] for c in cells_of(tmp_path / "o")} == {"zeroshot", "calibrated", "linear_probe", "dect"}


def test_method_options_come_from_the_registry(capsys, common, tmp_path):
    from edgetune.methods import METHODS

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    for name in METHODS:  # every registered method is runnable
        assert name in help_text
    helps = {}
    for name in ("dect", "pt", "lora"):  # each method's own flags: one line of help each, with its real default
        with pytest.raises(SystemExit):
            main(["run", name, "--help"])
        helps[name] = " ".join(capsys.readouterr().out.split())
    assert "--lr LR Adam learning rate of the decoder (default 0.01)" in helps["dect"]
    assert "weight λ of the prompt's calibrated scores ('cv': chosen by cross-validation; None: 1/shots) (default " \
           "cv)" in helps["dect"]  # --lam's default is "cv", as DecT's declaration says
    assert "--lr-prompt LR_PROMPT AdamW rate of the soft prompt" in helps["pt"] and "(default auto)" in helps["pt"]
    assert "--lr LR AdamW rate of the adapters (default 0.002)" in helps["lora"]
    assert "--lora-alpha" in helps["lora"] and "--alpha" not in helps["lora"]  # the old spelling works, unlisted
    assert "--lam" not in helps["lora"] and "--lr-prompt" not in helps["dect"]  # no flag of another method
    out = tmp_path / "o"
    code, _, err = run(capsys, "run", "dect", "--train", common[4] / "toy/train.jsonl", "--test",
                       common[4] / "toy/test.jsonl", "--template", "{text} It was {mask}", "--label-words",
                       "negative:bad,positive:great", "--shots", 2, "--seeds", 0, "--lam", 0.5, "--epochs", 3,
                       "--model", common[1], "--no-progress", "-o", out)
    assert code == 0, err
    by = {c["method"]: c for c in cells_of(out)}
    assert by["dect"]["params"]["lam"] == 0.5 and by["dect"]["params"]["epochs"] == [3]  # a list: DecT picks
    assert "lam" not in by["linear_probe"]["params"]  # only methods that take the option get it
    code, _, err = run(capsys, "run", "dect", "--train", common[4] / "toy/train.jsonl", "--test",
                       common[4] / "toy/test.jsonl", "--template", "{text} It was {mask}", "--label-words",
                       "negative:bad,positive:great", "--shots", 2, "--seeds", 0, "--epochs", 2, 4,
                       "--model", common[1], "--no-progress", "-o", tmp_path / "o2")
    assert code == 0, err  # several lengths: DecT picks one by cross-validation
    assert {c["method"]: c for c in cells_of(tmp_path / "o2")}["dect"]["params"]["epochs"] == [2, 4]


def test_registry_task_from_data_dir(capsys, common, tmp_path):
    from conftest import write_toy

    write_toy(common[4], "sst2")  # a stand-in sst2 folder in the toy data dir
    code, out, err = run(capsys, "run", "dect", "--task", "sst2", "--shots", 2, "--seeds", 0, *common,
                         "-o", tmp_path / "r")
    assert code == 0, err
    assert "sst2" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "dect", "--task", "sst2", "--data-dir", "/no/such/dir"], "data directory"),
        (["run", "dect", "--task", "nope"], "unknown task"),
        (["run", "pt", "--task", "sst2", "--label-words", "negative:unbelievableness,positive:great",
          "--shots", 2, "--steps", 1], "not one"),
        (["run", "dect", "--task", "sst2", "--label-words", "negative:good,positive:Good", "--shots", 2],
         "map to the same token"),
        (["run", "dect", "--task", "sst2", "--template", "{text} It was", "--shots", 2], "{mask} exactly once"),
        (["run", "dect", "--task", "sst2", "--template", "{review} It was {mask}", "--shots", 2],
         "names {review}, which example"),
        (["run", "dect", "--task", "sst2", "--shots", 50], "fewer than --shots"),
        (["predict", "/no/such/model", "x"], "not a saved edgetune model"),
        (["run", "dect", "--task", "sst2", "--device", "nonsense"], "unknown device"),
        (["run", "dect", "--task", "sst2", "--label-words", "negative:bad,positive:"], "has an empty word"),
        (["run", "dect", "--task", "sst2", "--label-words", "negative:bad,positive:great,negative:awful"],
         "given twice"),
        (["run", "dect", "--train", "/no/such/train.jsonl", "--test", "/no/such/test.jsonl", "--template",
          "{text} {mask}", "--label-words", "negative:bad,positive:great"], "train file"),
        (["run", "dect", "--train", "TOY_TRAIN", "--test", "TOY_TEST", "--text-col", "review", "--template",
          "{text} {mask}", "--label-words", "negative:bad,positive:great"], "no column 'review'"),
        (["run", "dect", "--task", "sst2", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
          "--max-retries", "0", "--timeout", "2", "--shots", "2"], "127.0.0.1:9"),
        (["bench", "BAD_YAML"], "bad.yaml:2: malformed YAML"),
        (["run", "mpd", "--task", "BAD_TEMPLATES", "--shots", 2], "'{review} Verdict: {mask}' names {review}"),
        (["run", "dect", "--train", "EMPTY_TEXT", "--test", "EMPTY_TEXT", "--template", "{text} {mask}",
          "--label-words", "negative:bad,positive:great"], "empty text"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(capsys, common, args, message, tmp_path):
    from conftest import write_toy

    write_toy(common[4], "sst2")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    (tmp_path / "templates.yaml").write_text(  # one bad template among several
        "name: toy2\ntemplate: '{text} It was {mask}'\ntemplates: ['{text} Overall: {mask}', "
        "'{review} Verdict: {mask}']\nlabels: [negative, positive]\nlabel_words: [bad, great]\n"
        f"files: {{train: {common[4] / 'toy/train.jsonl'}, test: {common[4] / 'toy/test.jsonl'}}}\n")
    (tmp_path / "empty.jsonl").write_text('{"text": "fine", "label": "positive"}\n{"text": " ", "label": "negative"}\n')
    args = [{"BAD_YAML": tmp_path / "bad.yaml", "BAD_TEMPLATES": tmp_path / "templates.yaml",
             "EMPTY_TEXT": tmp_path / "empty.jsonl",
             "TOY_TRAIN": common[4] / "toy/train.jsonl", "TOY_TEST": common[4] / "toy/test.jsonl"}.get(a, a)
            for a in args]
    extra = [] if args[0] in ("predict", "bench") else ["--model", common[1], "--no-progress"] + (
        [] if "--data-dir" in args else ["--data-dir", common[4]])
    code, _, err = run(capsys, *args, *extra, "-o", tmp_path / "r") if args[0] == "run" else run(
        capsys, *args)
    assert code == 2
    assert message in err and err.startswith("error:")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "results.jsonl").exists()  # nothing half-written


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
        "--seeds", 0, "--model", common[1], "--no-progress", "-o", tmp_path / "r",
        "--save-dir", tmp_path / "s")
    other = tmp_path / "other-model"
    tiny_model("causal", tokenizer.vocab_size, seed=5).save_pretrained(other)
    tokenizer.save_pretrained(other)
    code, _, err = run(capsys, "predict", tmp_path / "s" / "toy-dect-2shot-seed0", "x", "--model", other,
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
    assert "edgetune run METHOD --help" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["run", "dect", "--help"])
    out = capsys.readouterr().out
    for flag in ("--task", "--shots", "--seeds", "--model", "--test-size", "--label-words", "--save-dir"):
        assert flag in out


def test_a_flag_the_method_does_not_take_is_an_error(capsys):
    """No flag is silently ignored: BBT has no --steps (it counts calls: --budget)."""
    with pytest.raises(SystemExit) as exc:
        main(["run", "bbt", "--steps", "3"])
    assert exc.value.code == 2 and "unrecognized arguments: --steps 3" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["adept", "dept", "pt", "lora", "bbt"])
def test_run_input_edge_method_and_predict(capsys, common, tmp_path, method):
    out = tmp_path / "o"
    knobs = {"bbt": ["--budget", 3, "--popsize", 3, "--intrinsic-dim", 6, "--prompt-tokens", 4],
             "lora": ["--steps", 3, "--budget-tokens", 20], "pt": ["--steps", 3, "--prompt-tokens", 4]}.get(
        method, ["--steps", 3, "--budget-tokens", 20, "--prompt-tokens", 4])
    code, stdout, err = run(capsys, "run", method, "--train", common[4] / "toy/train.jsonl",
                            "--test", common[4] / "toy/test.jsonl", "--template", "{text} In summary, it was {mask}",
                            "--label-words", "negative:bad,positive:great", "--shots", 2, "--seeds", 0,
                            "--train-batch-size", 2, *knobs, "--model", common[1], "--no-progress", "-o", out,
                            "--save-dir", tmp_path / "s")
    assert code == 0, err
    assert "trainable params" in stdout and "training steps: 3" in stdout
    (r,) = cells_of(out)
    assert r["method"] == method and r["steps"] == 3 and r["trainable_params"] > 0
    assert r["queries"] >= 3 * 2
    code, stdout, err = run(capsys, "predict", tmp_path / "s" / f"toy-{method}-2shot-seed0", "a fine film",
                            "--no-progress")
    assert code == 0, err
    assert stdout.strip() in ("negative", "positive")


def test_remote_backend_is_refused_for_weight_methods(capsys, common):
    code, _, err = run(capsys, "run", "adept", "--task", "sst2", "--backend", "openai", "--base-url",
                       "http://127.0.0.1:9/v1", "--no-progress", "--data-dir", common[4])
    from conftest import write_toy

    write_toy(common[4], "sst2")
    code, _, err = run(capsys, "run", "adept", "--task", "sst2", "--backend", "openai", "--base-url",
                       "http://127.0.0.1:9/v1", "--no-progress", "--data-dir", common[4])
    assert code == 2 and "needs the model's weights" in err


def test_run_setfit_from_the_cli(capsys, toy_dir, tmp_path):
    """SetFit runs from `edgetune run` on its own default encoder, like every registered method."""
    out = tmp_path / "o"
    code, stdout, err = run(capsys, "run", "setfit", "--train", toy_dir / "toy/train.jsonl", "--test",
                            toy_dir / "toy/test.jsonl", "--template", "{text} It was {mask}", "--label-words",
                            "negative:bad,positive:great", "--shots", 3, "--seeds", 0, "--max-steps", 2,
                            "--train-batch-size", 4, "--no-progress", "-o", out, "--save-dir", tmp_path / "s")
    assert code == 0, err
    assert "SetFit" in stdout and "minilm-l6" in stdout
    (cell,) = cells_of(out)
    assert cell["model"] == "minilm-l6" and cell["steps"] == 2 and cell["params"]["max_steps"] == 2
    code, stdout, err = run(capsys, "predict", tmp_path / "s" / "toy-setfit-3shot-seed0", "a fine film",
                            "--no-progress")
    assert code == 0, err
    assert stdout.strip() in ("negative", "positive")


def test_hugging_face_datasets_are_a_data_source(capsys, common, tmp_path):
    """A saved DatasetDict folder on the command line, and a datasets.Dataset in Python (ClassLabel ids are
    mapped to their names); built here, since no hub is reachable."""
    datasets = pytest.importorskip("datasets")
    from edgetune import DecT
    from edgetune.data import read_examples

    rows = read_examples(common[4] / "toy/train.jsonl")
    names = sorted({e.label for e in rows})
    feats = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})

    def split(exs):
        return datasets.Dataset.from_dict({"sentence": [e.text for e in exs],
                                           "label": [names.index(e.label) for e in exs]}, features=feats)

    folder = tmp_path / "hf"
    datasets.DatasetDict({"train": split(rows), "test": split(read_examples(common[4] / "toy/test.jsonl"))}
                         ).save_to_disk(str(folder))
    out = tmp_path / "out"
    code, _, err = run(capsys, "run", "dect", "--train", folder, "--test", folder, "--text-col", "sentence",
                       "--template", "{text} It was {mask}", "--label-words", "negative:bad,positive:great",
                       "--shots", 2, "--seeds", 0, "--model", common[1], "--no-progress", "-o", out)
    assert code == 0, err
    (cell,) = [c for c in cells_of(out) if c["method"] == "dect"]
    assert cell["task"] == "hf" and cell["n_test"] == len(read_examples(common[4] / "toy/test.jsonl"))

    train = datasets.load_from_disk(str(folder))["train"].rename_column("sentence", "text")
    clf = DecT(str(common[1]), template="{text} It was {mask}", label_words={"negative": "bad", "positive": "great"},
               ).fit(train)
    assert set(clf.predict(train.select(range(3)))) <= set(names)
    code, _, err = run(capsys, "run", "dect", "--train", tmp_path, "--test", folder, "--text-col", "sentence",
                       "--template", "{text} {mask}",
                       "--label-words", "negative:bad,positive:great", "--model", common[1], "--no-progress")
    assert code == 2 and "not a Hugging Face dataset" in err


def one_line_error(code, err, message):
    assert code == 2, err
    assert err.startswith("error:") and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_hostile_but_fair_inputs(capsys, common, tmp_path, monkeypatch):
    """Each input a user can get wrong is one clear line with exit code 2, and nothing is left half-written."""
    import os
    import stat

    import yaml

    toy = ["--train", common[4] / "toy/train.jsonl", "--test", common[4] / "toy/test.jsonl", "--template",
           "{text} It was {mask}", "--label-words", "negative:bad,positive:great", "--shots", 2, "--seeds", 0,
           "--model", common[1], "--no-progress"]
    monkeypatch.setenv("EDGETUNE_CACHE_DIR", str(tmp_path / "cache"))
    code, _, err = run(capsys, "run", "dect", *toy, "-o", tmp_path / "r1", "--save-dir", tmp_path / "s")
    assert code == 0, err
    saved = tmp_path / "s" / "toy-dect-2shot-seed0"
    mask = os.umask(0)
    os.umask(mask)
    for f in saved.iterdir():  # saved with the user's umask, not private 0600/0700
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
    assert stat.S_IMODE(saved.stat().st_mode) == 0o777 & ~mask

    # a damaged feature cache is moved aside and rebuilt, with a warning naming it
    assert not (tmp_path / "r1" / "features.sqlite").exists()  # run's cache is the user's, none left in -o
    db = tmp_path / "cache" / "features.sqlite"
    assert db.is_file()
    for part in db.parent.glob("features.sqlite-*"):  # -wal/-shm: as after a clean close
        part.unlink()
    db.write_bytes(b"\0garbage" * 1024)  # overwritten (a truncated large cache fails the same way)
    with pytest.warns(UserWarning, match="was damaged"):
        code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 1, "-o", tmp_path / "r1")  # new cells, same cache
    assert code == 0, err
    assert list(db.parent.glob("features.sqlite.damaged-*"))

    # options after the texts
    code, out, err = run(capsys, "predict", saved, "--json", "a fine film", "--no-progress")
    assert code == 0 and json.loads(out.splitlines()[0])["label"] in ("negative", "positive")

    # damaged saved models
    weights = saved / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    one_line_error(*run(capsys, "predict", saved, "x")[::2], "damaged weights file")
    weights.unlink()
    one_line_error(*run(capsys, "predict", saved, "x")[::2], "has no weights file")

    # a data file with a byte that is not UTF-8
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text,label\ngood,positive\ncaf\xe9 bad,negative\n")
    code, _, err = run(capsys, "run", "dect", "--train", latin, "--test", latin, "--template", "{text} {mask}",
                       "--label-words", "negative:bad,positive:great", "--model", common[1], "--no-progress")
    one_line_error(code, err, "latin.csv:3: byte 0xe9 is not UTF-8")

    # a kind that contradicts a packaged model (refused before anything is loaded)
    one_line_error(*run(capsys, "run", "dect", "--task", "sst2", "--kind", "masked", "-o", tmp_path / "k")[::2],
                   "is a causal model; --kind masked")
    one_line_error(*run(capsys, "run", "dect", "--task", "sst2", "--kind", "embedding", "-o", tmp_path / "k")[::2],
                   "--kind embedding does not fit")

    # bench configs: a value that is not a number; an unknown task leaves no results file behind
    for bad, message in (({"shots": ["two"]}, "shots must be whole numbers"), ({"tasks": ["nope"]}, "unknown task")):
        cfg = {"name": "b", "tasks": ["sst2"], "methods": ["zeroshot"], "output": str(tmp_path / "b"), **bad}
        (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
        one_line_error(*run(capsys, "bench", tmp_path / "b.yaml", "--no-progress")[::2], message)
        assert not (tmp_path / "b" / "results.jsonl").exists()
