"""Fault injection: results, saved models and arguments under misuse — nothing lost, nothing silently wrong.

Each test is one probe of the robustness review (benchmarks/results/robustness.md lists them all): the CLI
answers a bad input with exit code 2 and one ``error:`` line, before it loads a model or writes anything; records
are only appended, and concurrent writers (real processes) never lose one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgetune.cli import main

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, message):
    assert code == 2, err
    assert err.startswith("error:") and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def records(folder: Path) -> list[dict]:
    from edgetune.bench.records import read_results

    return read_results(folder / "results.jsonl")


@pytest.fixture
def toy(tiny_model_dir, toy_dir):
    """``edgetune run dect`` arguments on the toy task and the tiny model (R of the review, made small)."""
    return ["--train", toy_dir / "toy/train.jsonl", "--test", toy_dir / "toy/test.jsonl", "--template",
            "{text} It was {mask}", "--label-words", "negative:bad,positive:great", "--shots", 2,
            "--model", tiny_model_dir, "--no-progress"]


def test_run_appends_to_existing_records_and_resumes(capsys, toy, tmp_path):
    assert run(capsys, "run", "dect", *toy, "--seeds", 3, "--name", "elsewhere", "-o", tmp_path / "a")[0] == 0
    out = tmp_path / "o"
    out.mkdir()
    foreign = records(tmp_path / "a")  # e.g. a bench's records, already in the folder
    (tmp_path / "a" / "results.jsonl").rename(out / "results.jsonl")
    code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 0, "-o", out)
    assert code == 0, err
    lines = records(out)
    assert lines[: len(foreign)] == foreign  # kept, not deleted
    assert len([x for x in lines if x["type"] == "cell"]) == 8
    assert "elsewhere" in (out / "report.md").read_text()  # the report covers every record
    # the same command again: every cell is done, nothing reruns, the table still shows them
    code, stdout, err = run(capsys, "run", "dect", *toy, "--seeds", 0, "-o", out)
    assert code == 0, err
    assert "DecT" in stdout and len([x for x in records(out) if x["type"] == "cell"]) == 8
    assert "model queries: 0" in stdout and "elsewhere" not in stdout


def test_run_refuses_to_mix_settings_in_one_folder(capsys, toy, tmp_path):
    out = tmp_path / "o"
    assert run(capsys, "run", "dect", *toy, "--seeds", 0, "-o", out)[0] == 0
    before = (out / "results.jsonl").read_bytes()
    code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 0, "--lam", 2.0, "-o", out)
    one_line_error(code, err, "run with other settings")
    assert "lam=2.0" in err and (out / "results.jsonl").read_bytes() == before
    code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 0, "--test-size", 3, "-o", out)
    one_line_error(code, err, "test size 3")


def test_duplicate_seeds_run_once(capsys, toy, tmp_path):
    code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 0, 0, "-o", tmp_path / "o")
    assert code == 0, err
    cells = [x for x in records(tmp_path / "o") if x["type"] == "cell"]
    assert len(cells) == 4 and "--seeds lists a value twice" in err
    assert "seeds: 0 ·" in (tmp_path / "o" / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "-1"], "a seed is a whole number from 0"),
    (["--seeds", "12345678901234567890"], "a seed is a whole number from 0"),
    (["--batch-size", "0"], "expected a whole number ≥ 1"),
    (["--batch-size", "-3"], "expected a whole number ≥ 1"),
    (["--shots", "0"], "expected a whole number ≥ 1"),
    (["--max-length", "0"], "expected a whole number ≥ 1"),
])
def test_bad_numbers_are_one_line(capsys, toy, tmp_path, argv, message):
    code, _, err = run(capsys, "run", "dect", *toy, *argv, "-o", tmp_path / "o")
    one_line_error(code, err, message)
    assert not (tmp_path / "o").exists()


def test_output_or_save_dir_naming_a_file_is_refused_before_training(capsys, toy, tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("mine")
    code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 0, "-o", a_file)
    one_line_error(code, err, "is a file")
    code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 0, "-o", tmp_path / "o", "--save-dir", a_file)
    one_line_error(code, err, "is a file")
    assert a_file.read_text() == "mine" and not (tmp_path / "o" / "results.jsonl").exists()


def test_saved_models_are_never_replaced_and_task_names_are_not_paths(capsys, toy, tmp_path):
    save = tmp_path / "save"
    code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 0, "--name", "../../escaped", "-o", tmp_path / "a",
                       "--save-dir", save)
    assert code == 0, err
    assert [p.name for p in save.iterdir()] == ["_.._escaped-dect-2shot-seed0"]
    assert not list(tmp_path.glob("escaped*")) and not list(tmp_path.parent.glob("escaped*"))
    stamp = (save / "_.._escaped-dect-2shot-seed0" / "weights.safetensors").stat().st_mtime_ns
    code, _, err = run(capsys, "run", "dect", *toy, "--seeds", 0, "--name", "../../escaped", "-o", tmp_path / "b",
                       "--save-dir", save)
    one_line_error(code, err, "already exists")
    assert (save / "_.._escaped-dect-2shot-seed0" / "weights.safetensors").stat().st_mtime_ns == stamp
    assert not (tmp_path / "b" / "results.jsonl").exists()


def test_one_class_train_file_without_words_is_one_line_and_leaves_nothing(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "one" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"text": f"t{i}", "label": "only"}) + "\n" for i in range(6)))
    code, _, err = run(capsys, "run", "dect", "--train", data, "--test", data, "--template", "{text} {mask}",
                       "--model", tiny_model_dir, "--no-progress", "-o", tmp_path / "o")
    one_line_error(code, err, "has only the label 'only'")
    assert not (tmp_path / "o").exists()


def test_bad_method_parameters_are_refused_before_the_model_loads(capsys, toy_dir, tmp_path):
    # a model that does not exist: had it been loaded first, the error would name the model
    args = ["--train", toy_dir / "toy/train.jsonl", "--test", toy_dir / "toy/test.jsonl", "--template",
            "{text} {mask}", "--label-words", "negative:bad,positive:great", "--model", tmp_path / "no-model",
            "--no-progress", "-o", tmp_path / "o"]
    code, _, err = run(capsys, "run", "dect", *args, "--lam", "nan")
    one_line_error(code, err, "lam")
    code, _, err = run(capsys, "run", "dect", *args, "--lr", "1e308")
    one_line_error(code, err, "lr")
    config = tmp_path / "b.yaml"
    config.write_text(f"tasks: [sst2]\nmodels: [{tmp_path / 'no-model'}]\nmethods:\n"
                      "  - {name: dect, params: {lam: .nan}}\n")
    one_line_error(*run(capsys, "bench", config, "-o", tmp_path / "b")[::2], "lam")


def test_bench_labels_must_be_unique_and_test_size_all_is_accepted(tmp_path):
    from edgetune.bench.config import BenchConfig
    from edgetune.errors import DataError

    with pytest.raises(DataError, match=r"label\(s\) \['zero-shot'\] are used twice"):
        BenchConfig.from_dict({"tasks": ["sst2"], "methods": [{"name": "zeroshot", "label": "zero-shot"},
                                                              {"name": "dect", "label": "zero-shot"}]})
    config = BenchConfig.from_dict({"tasks": ["sst2"], "methods": ["dect"], "test_size": "all", "seeds": [1, 1]})
    assert config.test_size is None and config.seeds == [1]
    with pytest.raises(DataError, match="seed"):
        BenchConfig.from_dict({"tasks": ["sst2"], "methods": ["dect"], "seeds": [2**40]})
    assert BenchConfig.from_dict({"name": "../../x", "tasks": ["sst2"], "methods": ["dect"]}
                                 ).output_dir().name == "_.._x"


def test_bench_output_naming_a_file_and_report_on_a_binary_file(capsys, tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("mine")
    config = tmp_path / "b.yaml"
    config.write_text(f"tasks: [sst2]\nmethods: [zeroshot]\noutput: {a_file}\n")
    one_line_error(*run(capsys, "bench", config)[::2], "is a file")
    binary = tmp_path / "r.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    one_line_error(*run(capsys, "bench", "--report", binary)[::2], "not UTF-8")
    other = tmp_path / "o.jsonl"
    other.write_text('["a list"]\n{"type": "cell"}\n')
    one_line_error(*run(capsys, "bench", "--report", other)[::2], "not an edgetune record")
    assert a_file.read_text() == "mine"


def test_no_empty_feature_cache_is_left_in_the_output_folder(capsys, toy, tmp_path):
    assert run(capsys, "run", "dect", *toy, "--seeds", 0, "-o", tmp_path / "o")[0] == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")) == [
        "report.md", "results.jsonl"]


def test_a_torn_last_line_is_cut_and_a_complete_one_kept(tmp_path):
    from edgetune.bench.records import ResultsLog

    path = tmp_path / "results.jsonl"
    path.write_text('{"type": "header"}\n{"type": "cell", "acc')  # a writer killed mid-line
    log = ResultsLog(path)
    log.write({"type": "extraction"})
    assert [x["type"] for x in records(tmp_path)] == ["header", "extraction"]
    path.write_text('{"type": "header"}\n{"type": "cell"}')  # complete, only its newline missing (hand-edited)
    ResultsLog(path).write({"type": "extraction"})
    assert [x["type"] for x in records(tmp_path)] == ["header", "cell", "extraction"]


WRITER = textwrap.dedent("""
    import sys
    from edgetune.bench.records import ResultsLog
    log = ResultsLog(sys.argv[1])
    for i in range(int(sys.argv[3])):
        log.write({"type": "cell", "writer": sys.argv[2], "i": i, "pad": "x" * 5000})
""")


def test_concurrent_writers_never_lose_or_tear_a_record(tmp_path):
    """Four processes append 150 lines of 5 kB each to one file at once: every line arrives whole."""
    path = tmp_path / "results.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), "150"]) for w in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    lines = records(tmp_path)
    assert len(lines) == 600
    for w in range(4):
        assert [x["i"] for x in lines if x["writer"] == str(w)] == list(range(150))


def test_two_runs_into_one_folder_at_once_keep_every_record(toy, tmp_path):
    """Two `edgetune run -o DIR` processes at the same time (different seeds): both runs' records are in the
    file, and the report that is left covers both."""
    out = tmp_path / "o"
    env = {**os.environ, "EDGETUNE_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "edgetune.cli", "run", "dect", *map(str, toy), "-o", str(out)]
    procs = [subprocess.Popen([*cmd, "--seeds", str(s)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for s in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    cells = [x for x in records(out) if x["type"] == "cell"]
    assert sorted((x["seed"], x["method"]) for x in cells) == sorted(
        (s, m) for s in (0, 1) for m in ("zeroshot", "calibrated", "linear_probe", "dect"))
    assert len({x["run"] for x in cells}) == 2
    report = (out / "report.md").read_text()
    assert "seeds: 0, 1" in report or "seeds: 1, 0" in report
    # each process printed its own seed's table, not the other's
    assert all("mean ± std" in o for o, _ in outs)


def test_lock_is_held_while_a_report_is_written(tmp_path):
    """A report is written from the file under its lock: a writer waits, so no report misses a finished run."""
    from edgetune.bench.records import ResultsLog, results_lock

    path = tmp_path / "results.jsonl"
    ResultsLog(path).write({"type": "header"})
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from edgetune.bench.records import results_lock
        with results_lock({str(path)!r}):
            print("held", flush=True)
            time.sleep(1.5)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with results_lock(path):
        waited = time.monotonic() - start
    holder.wait(10)
    assert waited > 0.5
