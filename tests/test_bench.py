"""`edgetune bench`: config parsing, a resumable grid on a tiny model, the report and plots, SetFit."""

import json
import time

import numpy as np
import pytest
import yaml
from conftest import toy_task_file

from edgetune.bench.config import BenchConfig
from edgetune.bench.records import read_results
from edgetune.bench.report import PLOTS
from edgetune.cli import main
from edgetune.errors import DataError

TINY_BBT = {"budget": 4, "popsize": 2, "intrinsic_dim": 4, "prompt_tokens": 2}


@pytest.fixture
def config_file(tmp_path, toy_dir, tiny_model_dir):
    toy_task_file(tmp_path, toy_dir)
    cfg = {"name": "tiny", "models": [str(tiny_model_dir)], "tasks": ["toy.yaml"], "shots": [2, 4], "seeds": [0, 1],
           "test_size": 8, "output": str(tmp_path / "out"),
           "methods": ["zeroshot", "calibrated", "dect", {"name": "bbt", "params": TINY_BBT},
                       {"name": "pt", "label": "pt-short", "params": {"steps": 2, "prompt_tokens": 2,
                                                                       "batch_size": 2}}]}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cells(path):
    return {(c["shots"], c["seed"], c["method"]): c for c in read_results(path) if c["type"] == "cell"}


def test_bench_runs_the_grid_resumes_and_reports(config_file, tmp_path, capsys):
    assert main(["bench", str(config_file), "--no-progress"]) == 0
    results = tmp_path / "out" / "results.jsonl"
    first = cells(results)
    assert len(first) == 2 * 2 * 5  # shots x seeds x methods
    for (shots, _, method), c in first.items():
        assert c["n_train"] == 2 * shots and c["n_test"] == 8 and 0 <= c["accuracy"] <= 1
        assert c["queries"] == {"zeroshot": 0, "calibrated": 2}.get(method, c["queries"])  # 2 content-free
        assert c["queries"] >= (0 if method in ("zeroshot", "calibrated") else 2 * shots)
        assert np.isfinite(c["wall_seconds"])
    assert first[(2, 0, "bbt")]["steps"] == 4 and first[(2, 0, "bbt")]["queries"] >= 4 * 4
    extraction = [x for x in read_results(results) if x["type"] == "extraction" and x["split"] == "train"]
    # training prompts paid once per (shots, seed), shared by zero-shot and DecT; the two content-free prompts
    # once, by the first method that reads them (calibrated zero-shot)
    assert len(extraction) == 4 + 1 and all(x["queries"] > 0 for x in extraction)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## toy (test n = 8)" in report and "pt-short" in report and "BBT" in report
    assert "dev % start → chosen" in report  # trained methods show where training started and what it chose
    assert "runs rolled back" in report and all(  # the trainer's rollbacks are recorded, none without a collapse
        c["training"]["rollbacks"] == [] for c in first.values() if c["method"] == "pt-short")
    for name in PLOTS:
        assert (tmp_path / "out" / name).stat().st_size > 1000

    # a second invocation has nothing to do
    assert main(["bench", str(config_file), "--no-progress"]) == 0
    assert len(cells(results)) == len(first)
    assert read_results(results)[-1]["already_done"] == 20

    # drop two finished cells (as if the run had been killed before them): only those run again
    lines = results.read_text().splitlines()
    def dropped(line: dict) -> bool:
        return line["type"] == "cell" and (line["shots"], line["seed"]) == (4, 1) and line["method"] in ("dect", "bbt")

    keep = [ln for ln in lines if not dropped(json.loads(ln))]
    results.write_text("\n".join(keep) + "\n{\"type\": \"cell\", \"tor")  # and a torn last line
    before = len(keep)
    assert main(["bench", str(config_file), "--no-progress"]) == 0
    new = [json.loads(ln) for ln in results.read_text().splitlines()[before + 1:] if ln.strip()]
    assert sorted(c["method"] for c in new if c["type"] == "cell") == ["bbt", "dect"]
    again = cells(results)
    for key in ((4, 1, "dect"), (4, 1, "bbt")):  # deterministic: the same result as the first time
        assert again[key]["accuracy"] == first[key]["accuracy"]
    assert not [x for x in new if x["type"] == "extraction" and x["split"] == "train"]  # features were cached

    # the report re-renders from the results file alone
    report = (tmp_path / "out" / "report.md").read_text()
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "r.jsonl").write_text(results.read_text())
    assert main(["bench", "--report", str(alone / "r.jsonl")]) == 0
    assert (alone / "report.md").read_text().split("## toy")[1] == report.split("## toy")[1]
    assert (alone / "accuracy_vs_time.png").is_file()

    # features paid for in a run that left no record: wall times are unknown (nan); the time plot is skipped,
    # the rest of the report still renders
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip() and not x.endswith("tor")]
    rows = [r | {"wall_seconds": float("nan")} if r.get("type") == "cell" else r for r in rows]
    (unknown / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["bench", "--report", str(unknown / "r.jsonl")]) == 0
    assert (unknown / "report.md").is_file() and not (unknown / "accuracy_vs_time.png").exists()


def test_bench_config_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="unknown key"):
        BenchConfig.from_dict({"tasks": ["sst2"], "methods": ["dect"], "shot": [4]})
    with pytest.raises(DataError, match="no parameter"):
        BenchConfig.from_dict({"tasks": ["sst2"], "methods": [{"name": "dect", "params": {"steps": 3}}]})
    with pytest.raises(Exception, match="unknown method"):
        BenchConfig.from_dict({"tasks": ["sst2"], "methods": ["dcet"]})
    with pytest.raises(DataError, match="at least one"):
        BenchConfig.from_dict({"tasks": [], "methods": ["dect"]})
    cfg = BenchConfig.from_dict({"tasks": ["sst2"], "methods": ["dect", {"name": "setfit", "model": "minilm-l6"}],
                                 "seeds": [0], "models": ["smollm2-135m"]})
    assert [(c[0], c[4].label) for c in cfg.cells()] == [("smollm2-135m", "dect"), ("minilm-l6", "setfit")]
    assert main(["bench", "--report", str(tmp_path / "missing.jsonl")]) == 2


def test_setfit_trains_predicts_saves_and_loads(toy_task, tmp_path, make_backend):
    from edgetune.backends import load_backend
    from edgetune.methods import SetFit, load

    backend = load_backend("minilm-l6", cache=None, progress=False)
    weights = {n: p.clone() for n, p in backend.model.named_parameters()}
    m = SetFit(backend, max_steps=3, batch_size=4, progress=False).fit(toy_task.sample(3, 0))
    assert m.costs().steps == 3 and m.trainable_params_ > 20_000_000
    assert all(p.equal(weights[n]) for n, p in backend.model.named_parameters())  # the shared encoder is untouched
    texts = ["a wonderful film", "a dull mess"]
    assert set(m.predict(texts)) <= {"negative", "positive"}
    path = m.save(tmp_path / "sf")
    assert not list(path.rglob("*.pkl")) and (path / "body" / "model.safetensors").is_file()
    np.testing.assert_allclose(load(path).class_scores(texts), m.class_scores(texts), atol=1e-5)
    from edgetune.errors import IncompatibleError

    with pytest.raises(IncompatibleError, match="sentence-transformers encoder"):
        SetFit(make_backend("causal")).fit(toy_task.sample(2, 0))


def test_part_of_a_grid_runs_now_and_the_rest_later(config_file, tmp_path):
    results = tmp_path / "out" / "results.jsonl"
    assert main(["bench", str(config_file), "--no-progress", "--no-plots", "--seeds", "1",
                 "--methods", "zeroshot", "dect"]) == 0
    assert set(cells(results)) == {(s, 1, m) for s in (2, 4) for m in ("zeroshot", "dect")}
    assert "DecT" in (tmp_path / "out" / "report.md").read_text()
    assert main(["bench", str(config_file), "--no-progress", "--no-plots"]) == 0  # the rest
    assert len(cells(results)) == 2 * 2 * 5
    assert "seeds: 1, 0 ·" in (tmp_path / "out" / "report.md").read_text()  # what every part covered
    with pytest.raises(DataError, match="no method bbt-long; it has zeroshot, calibrated, dect, bbt, pt-short"):
        BenchConfig.from_yaml(config_file).narrowed(methods=["bbt-long"])
    with pytest.raises(DataError, match="no seed 7"):
        BenchConfig.from_yaml(config_file).narrowed(seeds=[7])


def test_bench_runs_mpd_on_several_prompts_and_word_sets(tmp_path, toy_dir, tiny_model_dir):
    """The runner asks each method which prompts and words it queries: mpd with two templates and two word sets
    gets both sets scored in one query per input and template, beside DecT on the main prompt alone."""
    task = tmp_path / "toy.yaml"
    task.write_text(yaml.safe_dump({
        "name": "toy", "template": "{text} In summary, it was {mask}", "templates": ["{text} All in all, {mask}"],
        "label_words": {"negative": "bad", "positive": "great"},
        "more_label_words": [{"negative": "awful", "positive": "good"}],
        "files": {"train": str(toy_dir / "toy/train.jsonl"), "test": str(toy_dir / "toy/test.jsonl")}}))
    cfg = {"name": "mpd", "models": [str(tiny_model_dir)], "tasks": [str(task)], "shots": [2], "seeds": [0],
           "test_size": 6, "output": str(tmp_path / "out"),
           "methods": [{"name": "dect", "params": {"epochs": 2}},
                       {"name": "mpd", "params": {"prompts": 2, "word_sets": 2, "epochs": 2}}]}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["bench", str(tmp_path / "b.yaml"), "--no-progress"]) == 0
    got = cells(tmp_path / "out" / "results.jsonl")
    assert got[(2, 0, "mpd")]["queries"] == 2 * (4 + 2) and got[(2, 0, "dect")]["queries"] == 4 + 2
    assert 0 <= got[(2, 0, "mpd")]["accuracy"] <= 1
    extraction = [x for x in read_results(tmp_path / "out" / "results.jsonl") if x["type"] == "extraction"]
    # DecT's prompts (2 words) and mpd's (4 words, two templates) are different queries; mpd pays twice DecT's
    # (training and test prompts, in that order for each method), not four times
    assert len(extraction) == 4 and extraction[1]["split"] == "test" and extraction[3]["split"] == "test"
    dect_paid = extraction[0]["queries"] + extraction[1]["queries"]
    assert extraction[2]["queries"] + extraction[3]["queries"] == 2 * dect_paid > 0


def test_peak_memory_sees_what_a_block_allocated_and_not_what_it_started_with():
    import torch

    from edgetune.bench.runner import PeakMemory

    held = torch.ones(20_000_000)  # 76 MB in use before the block: not counted
    with PeakMemory() as memory:
        x = torch.ones(10_000_000)  # 38 MB
        time.sleep(0.1)
        del x
    assert 30 < memory.peak_mb < 60, memory.peak_mb
    assert memory.measure in ("heap in use (mallinfo2)", "process RSS", "cuda allocated")
    del held


def test_cpu_share_tells_a_busy_block_from_a_waiting_one():
    import torch

    from edgetune.bench.runner import CpuShare

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with CpuShare() as waiting:
            time.sleep(0.2)
        with CpuShare() as busy:
            end = time.perf_counter() + 0.2
            while time.perf_counter() < end:
                pass
    finally:
        torch.set_num_threads(threads)
    assert waiting.seconds >= 0.2 and waiting.share < 0.2, waiting.share
    assert busy.share > 0.3, busy.share  # ≈ 1 alone; a busy machine takes some of it


def test_a_sweep_scored_on_a_held_out_split_with_a_cold_cache_and_views(tmp_path, toy_dir, tiny_model_dir, capsys):
    """What the one-off scripts built by hand: a parameter sweep as labelled entries, a validation split held out
    of the train pool (samples never hold one of its examples; the test split is not read), a cold cache (every
    query paid, nothing left behind) and report views (task × method, per-sample differences)."""
    from edgetune.bench.config import BenchConfig
    from edgetune.bench.runner import _eval_split

    task = toy_task_file(tmp_path, toy_dir, test=tmp_path / "missing.jsonl")
    cfg = {"name": "sweep", "models": [str(tiny_model_dir)], "tasks": [str(task)], "shots": [2], "seeds": [0, 1],
           "output": str(tmp_path / "out"), "eval": {"split": "heldout", "per_class": 2}, "cache": "cold",
           "views": [{"pivot": "accuracy"}, {"paired": "dect"}],
           "methods": [{"name": "dect", "params": {"epochs": 2}},
                       {"name": "dect", "sweep": {"lam": [0.5, 1.0]}, "params": {"epochs": 2}}]}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    config = BenchConfig.from_yaml(tmp_path / "b.yaml")
    assert [m.label for m in config.methods] == ["dect", "dect lam=0.5", "dect lam=1"]
    assert [m.params for m in config.methods][1:] == [{"epochs": 2, "lam": 0.5}, {"epochs": 2, "lam": 1.0}]
    val, _, rest = _eval_split(config, config.load_task(str(task)))
    assert len(val) == 4 and not {e.id for e in val} & {e.id for e in rest}
    for seed in (0, 1):  # what the runner samples from: the rest of the pool
        from edgetune.data.sampling import sample_k_per_class

        assert not {e.id for e in val} & {e.id for e in sample_k_per_class(rest, 2, seed)}
    assert main(["bench", str(tmp_path / "b.yaml"), "--no-progress"]) == 0
    got = cells(tmp_path / "out" / "results.jsonl")
    assert set(got) == {(2, s, m) for s in (0, 1) for m in ("dect", "dect lam=0.5", "dect lam=1")}
    assert all(c["n_test"] == 4 and c["task_name"] == "toy-val" and c["spec"]["eval"]["per_class"] == 2
               for c in got.values())
    assert not (tmp_path / "out" / "features.sqlite").exists()  # the cold cache was the run's own
    paid = [x for x in read_results(tmp_path / "out" / "results.jsonl") if x["type"] == "extraction"]
    assert paid and all(x["queries"] > 0 for x in paid)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## toy-val (test n = 4)" in report and "## Accuracy by task" in report
    assert "## Paired with DecT" in report and "| toy-val | dect lam=0.5 | 2 |" in report
    capsys.readouterr()
    assert main(["bench", str(tmp_path / "b.yaml"), "--no-progress"]) == 0  # resumed: every cell is done
    assert "all 6 cells are done" in capsys.readouterr().out


def test_eval_at_checks_records_curves_and_the_checks_view_replays_the_rules(tmp_path, toy_dir, tiny_model_dir):
    """``eval: {at_checks: true}`` scores the eval split at every dev check of a gradient-trained method (no
    monkeypatching: the trainer's on_check); the record holds one eval accuracy per check, the final accuracy is
    the one at the check training kept, and the ``checks`` view replays each selection rule on the curves."""
    task = toy_task_file(tmp_path, toy_dir, test=tmp_path / "missing.jsonl")
    cfg = {"name": "checks", "models": [str(tiny_model_dir)], "tasks": [str(task)], "shots": [4], "seeds": [0, 1],
           "output": str(tmp_path / "out"), "eval": {"split": "heldout", "per_class": 3, "at_checks": True},
           "views": [{"checks": "rules"}],
           "methods": ["zeroshot", {"name": "pt", "params": {"steps": 4, "eval_every": 2, "prompt_tokens": 2,
                                                           "batch_size": 2}}]}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["bench", str(tmp_path / "b.yaml"), "--no-progress"]) == 0
    got = cells(tmp_path / "out" / "results.jsonl")
    for seed in (0, 1):
        t = got[(4, seed, "pt")]["training"]
        assert len(t["eval_accuracy"]) == len(t["dev_accuracy"]) == 3 and t["n_dev"] > 0
        assert len(t["loss_per_check"]) == 2 and all(v is not None for v in t["loss_per_check"])
        kept = [s for s, _ in t["dev_accuracy"]].index(t["best_step"])
        assert got[(4, seed, "pt")]["accuracy"] == pytest.approx(t["eval_accuracy"][kept])
        assert got[(4, seed, "pt")]["spec"]["eval"]["at_checks"] is True
    assert "training" not in got[(4, 0, "zeroshot")]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Check by check" in report and "| best check in hindsight (eval) |" in report
    assert "(edgetune)" in report and report.count("| toy-val seed ") == 2


def test_a_named_in_process_backend_is_a_model_label(tmp_path, toy_dir, tiny_model_dir):
    """``backends:`` also names an in-process model with options; the label keys the records."""
    task = toy_task_file(tmp_path, toy_dir)
    cfg = {"name": "named", "models": ["tiny b4"], "tasks": [str(task)], "shots": [2], "seeds": [0], "test_size": 4,
           "output": str(tmp_path / "out"), "methods": ["zeroshot"],
           "backends": {"tiny b4": {"model": str(tiny_model_dir), "batch_size": 4}}}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["bench", str(tmp_path / "b.yaml"), "--no-progress"]) == 0
    lines = read_results(tmp_path / "out" / "results.jsonl")
    assert [c["model"] for c in lines if c["type"] == "cell"] == ["tiny b4"]
    assert lines[0]["config"]["backends"]["tiny b4"]["batch_size"] == 4
    assert {x["model"] for x in lines if x["type"] == "extraction"} == {"tiny b4"}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("eval", {"split": "heldout"}, "held-out eval"), ("eval", {"split": "dev"}, "eval is"),
    ("eval", {"split": "test", "at_checks": "yes"}, "at_checks is true or false"),
    ("views", [{"checks": "all"}], "a view is"),
    ("cache", "lukewarm", "cache is warm or cold"), ("views", [{"paired": "nope"}], "a view is"),
])
def test_bad_eval_cache_and_views_are_one_line(tmp_path, key, value, message):
    from edgetune.bench.config import BenchConfig
    from edgetune.errors import DataError

    with pytest.raises(DataError, match=message):
        BenchConfig.from_dict({"name": "x", "tasks": ["sst2"], "methods": ["dect"], key: value})


def test_the_replayed_selection_rules_pick_the_checks_they_name():
    """The checks view's rules on one hand-made curve (dev of 50: two examples = 0.04; the window is accuracy ≥
    0.86, checks 2 and 3): edgetune's pick is the lower loss inside it, the latest-in-window rule the later one,
    and the last-check rules fall back to edgetune's pick when the last check left the window or a rollback fired."""
    import numpy as np

    from edgetune.bench.report import RULES

    a, loss = np.array([0.5, 0.8, 0.9, 0.88, 0.7]), np.array([1.0, 0.3, 0.3, 0.35, 0.2])
    picks = {name: rule(a, loss, 50, {"rollbacks": []}) for name, rule in RULES.items()}
    assert picks == {
        "dev accuracy, earliest best (the papers' rule)": 2, "dev accuracy, latest best": 2,
        "dev loss, among checks ≥ the start's accuracy": 4,
        "dev loss, also within 2 dev examples of the best accuracy (edgetune)": 2,
        "latest check within edgetune's window": 3,
        "last check if within edgetune's window, else edgetune's pick": 2,
        "last check, or edgetune's pick if a rollback fired": 4, "last check": 4}
    assert RULES["last check, or edgetune's pick if a rollback fired"](a, loss, 50, {"rollbacks": [[40, 20]]}) == 2
    a[4] = 0.9  # the last check back in the window: kept
    assert RULES["last check if within edgetune's window, else edgetune's pick"](a, loss, 50, {}) == 4


def test_tuple_valued_defaults_are_recorded_and_a_move_of_one_is_noticed():
    """DecT's candidate epochs and λ grid are tuples; a cell records them (as lists) like any other default, so a
    resume notices when one moved, and a record written before they were kept reads as 'added since'."""
    from edgetune.bench import runner
    from edgetune.bench.config import MethodEntry

    defaults = runner._defaults(MethodEntry(name="dect", label="dect"))
    assert isinstance(defaults["epochs"], list) and isinstance(defaults["lam_grid"], list)
    then = {"name": "dect", "params": {}, "defaults": defaults}
    now = {"name": "dect", "params": {}, "defaults": {**defaults, "epochs": [*defaults["epochs"], 40]}}
    assert runner._moved_defaults(then, now) == {"epochs": (defaults["epochs"], now["defaults"]["epochs"])}
    older = {**then, "defaults": {k: v for k, v in defaults.items() if k not in ("epochs", "lam_grid")}}
    assert runner._moved_defaults(older, then) == {}


def test_tuple_valued_given_params_are_recorded_and_a_change_of_one_is_noticed(config_file):
    """A tuple given from Python (``MethodEntry(params={"epochs": (10, 20)})``) is recorded as its list, as YAML
    gives it: the record says what ran, the same values as a list resume, and other values are other cells."""
    from edgetune.bench import runner
    from edgetune.bench.config import MethodEntry

    config = BenchConfig.from_yaml(config_file)
    entry = MethodEntry(name="dect", label="dect", params={"epochs": (10, 20)})
    spec = json.loads(json.dumps(runner._spec(config, entry)))
    assert spec["params"] == {"epochs": [10, 20]} and "epochs" not in spec["defaults"]
    record = {"spec": spec}
    cell = (None, None, 4, 0, entry)
    assert runner._same_spec(config, cell, record)
    assert runner._same_spec(config, (*cell[:4], MethodEntry("dect", "dect", {"epochs": [10, 20]})), record)
    assert not runner._same_spec(config, (*cell[:4], MethodEntry("dect", "dect", {"epochs": (10, 30)})), record)


def test_a_resumed_grid_notices_a_default_that_moved_since_its_cells_ran(config_file, tmp_path, monkeypatch):
    """Cells record the declared defaults they ran with; resuming after a default moved refuses (a record is never
    mixed with cells run under another default), and naming the old value in the config's params resumes."""
    from edgetune.bench import runner
    from edgetune.errors import EdgetuneError
    from edgetune.methods.core.config import PROMPT_LR_RATIO

    results = tmp_path / "out" / "results.jsonl"
    assert main(["bench", str(config_file), "--no-progress", "--no-plots", "--seeds", "1", "--methods",
                 "pt-short"]) == 0
    spec = next(c for c in read_results(results) if c["type"] == "cell")["spec"]
    assert spec["defaults"]["prompt_lr_ratio"] == PROMPT_LR_RATIO and "steps" not in spec["defaults"]
    config = BenchConfig.from_yaml(config_file).narrowed(seeds=[1], methods=["pt-short"])
    assert runner.check_run(config) == 0  # nothing moved: done

    today = runner._defaults
    monkeypatch.setattr(runner, "_defaults", lambda entry: {**today(entry), "prompt_lr_ratio": 0.7})
    with pytest.raises(EdgetuneError, match=f"default prompt_lr_ratio was {PROMPT_LR_RATIO!r}, now 0.7"):
        runner.check_run(config)
    raw = yaml.safe_load(config_file.read_text())
    raw["methods"][-1]["params"]["prompt_lr_ratio"] = PROMPT_LR_RATIO  # the value those cells ran with
    config_file.write_text(yaml.safe_dump(raw))
    assert runner.check_run(BenchConfig.from_yaml(config_file).narrowed(seeds=[1], methods=["pt-short"])) == 0
    raw["methods"][-1]["params"]["prompt_lr_ratio"] = 0.7  # another value given: other cells
    config_file.write_text(yaml.safe_dump(raw))
    with pytest.raises(EdgetuneError, match="prompt_lr_ratio"):
        runner.check_run(BenchConfig.from_yaml(config_file).narrowed(seeds=[1], methods=["pt-short"]))
