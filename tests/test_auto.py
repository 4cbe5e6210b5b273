"""`auto`: the method chosen by cross-validation on the user's own sample."""

import math

import numpy as np
import pytest
from conftest import toy_task_file

from edgetune import load
from edgetune.bench.records import read_results
from edgetune.cli import main
from edgetune.errors import DataError
from edgetune.methods import Auto, DecT, ParamError
from edgetune.methods.core.selection import winner

FAST = ["calibrated", "centroid", "dect:epochs=3"]


def test_the_tie_rule_keeps_the_best_unless_the_folds_cannot_tell_it_from_the_preferred_or_cheaper():
    clear = [[0.5, 0.5, 0.5, 0.5], [0.9, 0.8, 0.9, 0.8], [0.6, 0.5, 0.6, 0.5]]
    assert winner(clear, tie=3.0, prefer=2) == (1, [False, True, False])  # a steady 30-point gap is no tie
    noisy = [[0.5, 0.7, 0.4, 0.6], [0.7, 0.5, 0.8, 0.4], [0.6, 0.6, 0.5, 0.5]]  # best: row 1, by noise
    best, tied = winner(noisy, tie=0.0)
    assert best == 1 and tied == [False, True, False]
    assert winner(noisy, tie=3.0, prefer=2)[0] == 2  # tied, and preferred
    assert winner(noisy, tie=3.0)[0] == 0  # tied, and cheapest
    assert winner(clear, tie=0.0, prefer=0)[0] == 1  # a preference that is not tied counts for nothing


def test_auto_cross_validates_on_the_sample_alone_and_refits_the_winner(make_backend, toy_task, tmp_path):
    be = make_backend("causal")
    train = toy_task.sample(5, seed=0)
    before = be.total_queries
    auto = Auto(be, candidates=FAST, ensemble=2, tie=0.0, prefer=None, cv_folds=3, cv_repeats=2).fit(train)
    assert be.total_queries - before == len(train) + 2  # the sample and two content-free prompts: nothing more
    t = auto.cv_results_
    assert t["n_splits"] == 3 and t["n_repeats"] == 2 and t["metric"] == "accuracy"
    rows = len(t["candidate"])
    assert set(t["candidate"][:3]) == {"calibrated", "centroid", "dect"} and t["candidate"][3].startswith("ensemble(")
    for i in range(rows):  # the mean is the mean of the six splits' scores
        assert t["mean_test_score"][i] == pytest.approx(np.mean([t[f"split{j}_test_score"][i] for j in range(6)]))
    best = int(np.argmax(t["mean_test_score"]))
    assert auto.choice_ == t["candidate"][best] and t["rank_test_score"][best] == 1  # tie 0: the best mean
    assert auto.chosen_.labels_ == auto.labels_ and len(auto.chosen_.labels_) == 2
    test = toy_task.load("test")
    np.testing.assert_allclose(auto.class_scores(list(test)), auto.chosen_.class_scores(list(test)))
    assert auto.predict(["a great film"])[0] in ("negative", "positive")
    assert auto.summary().startswith(f"auto chose {auto.choice_} · cross-validated accuracy (3-fold × 2): ")
    saved = auto.save(tmp_path / "auto")
    again = load(saved, model=be)
    assert again.choice_ == auto.choice_ and again.cv_results_["candidate"] == t["candidate"]
    np.testing.assert_allclose(again.class_scores(list(test)), auto.class_scores(list(test)), rtol=1e-5)


def test_a_preferred_method_wins_the_ties_and_a_metric_is_what_the_folds_score(make_backend, toy_task):
    be = make_backend("causal")
    train = toy_task.sample(5, seed=1)
    wide = Auto(be, candidates=FAST, ensemble=0, tie=1e6, prefer="dect", cv_folds=3).fit(train)
    assert wide.choice_ == "dect" and all(wide.cv_results_["tied"])  # everything ties: the preferred one
    cheap = Auto(be, candidates=FAST, ensemble=0, tie=1e6, prefer=None, cv_folds=3).fit(train)
    assert cheap.choice_ == "calibrated"  # everything ties, nothing preferred: the cheapest
    f1 = Auto(be, candidates=FAST, ensemble=0, metric="macro_f1", cv_folds=3).fit(train)
    assert f1.cv_results_["metric"] == "macro_f1"
    assert f1.cv_results_["split0_test_score"] != wide.cv_results_["split0_test_score"] or math.isclose(
        max(wide.cv_results_["split0_test_score"]), 1.0)


def test_a_sample_too_small_to_cross_validate_is_one_line_or_the_fallback(make_backend, toy_task):
    be = make_backend("causal")
    train = toy_task.sample(1, seed=0)
    with pytest.raises(DataError, match=r"needs at least 2 examples of every label .* has 1: add examples, or pass "
                                        r"fallback='dect'"):
        Auto(be, candidates=FAST).fit(train)
    auto = Auto(be, candidates=FAST, fallback="dect").fit(train)
    assert auto.choice_ == "dect" and isinstance(auto.chosen_, DecT) and "fallback" in auto.cv_results_["note"]


@pytest.mark.parametrize("params, message", [
    ({"time_budget": 0}, "time_budget must be a finite number in (0, inf) or None"),
    ({"metric": "f2"}, "metric must be one of 'accuracy', 'macro_f1', 'balanced_accuracy'"),
    ({"candidates": ["adept"]}, "candidate 'adept' is not an output-edge method"),
    ({"candidates": []}, "candidates must be a list of one method or more"),
    ({"costly": ["dect"]}, "costly candidate 'dect' must be SetFit or an input-edge method"),
    ({"fallback": "adept"}, "fallback 'adept' must be an output-edge method"),
])
def test_bad_auto_settings_are_one_line_before_any_model_loads(params, message):
    with pytest.raises(ParamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Auto.validate_params(params)


def test_auto_ranges_over_models_and_counts_the_extra_extraction(make_backend, toy_task, tiny_model_dir):
    be = make_backend("causal")
    train = toy_task.sample(4, seed=0)
    auto = Auto(be, candidates=["centroid", "dect:epochs=3"], models=[str(tiny_model_dir)], ensemble=0,
                cv_folds=2, cv_repeats=1).fit(train)
    other = str(tiny_model_dir)
    assert auto.cv_results_["candidate"] == ["centroid", "dect", f"centroid@{other}", f"dect@{other}"]
    assert auto.extraction_ == {"tiny-causal": len(train) + 2, other: len(train) + 2}
    assert auto.costs().queries == 2 * (len(train) + 2)  # every prompt choosing read, on both models
    again = Auto(be, candidates=["centroid", "dect:epochs=3"], models=[str(tiny_model_dir)], ensemble=0,
                 cv_folds=2, cv_repeats=1).fit(train)
    assert again.extraction_ == auto.extraction_ and again.costs() == auto.costs()  # cached: the same cost


def test_a_time_budget_admits_a_costly_candidate_by_its_measured_fit_time(make_backend, toy_task):
    be = make_backend("causal")
    train = toy_task.sample(5, seed=0)
    costly = ["pt:steps=4,prompt_tokens=2,batch_size=4,eval_every=2"]
    tight = Auto(be, candidates=FAST, ensemble=0, cv_folds=3, time_budget=1e-3, costly=costly).fit(train)
    log = tight.cv_results_["costly"]
    assert log[0]["candidate"] == "pt" and log[0]["skipped"] == "over the time left"
    roomy = Auto(be, candidates=FAST, ensemble=0, cv_folds=3, time_budget=600, costly=costly).fit(train)
    entry = roomy.cv_results_["costly"][0]
    assert entry["estimated_seconds"] > 0 and "seconds" in entry and 0 <= entry["dev_score"] <= 1
    assert entry["kept"] == (roomy.choice_ == "pt")
    assert roomy.cv_results_["seconds"] < 600 * 1.2


def test_run_auto_prints_its_choice_and_refuses_a_bad_budget(tmp_path, toy_dir, tiny_model_dir, capsys):
    task = toy_task_file(tmp_path, toy_dir)
    code = main(["run", "auto", "--task", str(task), "--model", str(tiny_model_dir), "--time-budget", "0",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "time_budget must be a finite number" in err and len(err.splitlines()) == 1
    assert main(["run", "auto", "--task", str(task), "--model", str(tiny_model_dir), "--shots", "4", "--seeds",
                 "0", "--test-size", "8", "--candidates", "calibrated", "dect:epochs=3", "--metric", "macro_f1",
                 "--no-progress", "-o", str(tmp_path / "r"), "--save-dir", str(tmp_path / "saved")]) == 0
    out = capsys.readouterr().out
    assert "auto chose" in out and "cross-validated macro_f1" in out
    assert main(["predict", str(tmp_path / "saved" / "toy-auto-4shot-seed0"), "a wonderful film", "--model",
                 str(tiny_model_dir), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() in ("negative", "positive")
    cell = next(c for c in read_results(tmp_path / "r" / "results.jsonl") if c["type"] == "cell")
    assert cell["choice"]["chosen"] in cell["choice"]["cv"]["candidate"] and cell["params"]["metric"] == "macro_f1"


def test_the_choices_view_sets_auto_beside_dect_and_the_best_single_method_in_hindsight(tmp_path, toy_dir,
                                                                                         tiny_model_dir):
    import yaml

    toy_task_file(tmp_path, toy_dir)
    cfg = {"name": "choices", "models": [str(tiny_model_dir)], "tasks": ["toy.yaml"], "shots": [4], "seeds": [0, 1],
           "test_size": 8, "output": str(tmp_path / "out"), "views": [{"choices": "auto"}],
           "methods": ["calibrated", {"name": "dect", "params": {"epochs": 3}},
                       {"name": "auto", "params": {"candidates": ["calibrated", "dect:epochs=3"], "cv_folds": 2,
                                                   "ensemble": 0}}]}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["bench", str(tmp_path / "b.yaml"), "--no-progress", "--no-plots"]) == 0
    cells = [c for c in read_results(tmp_path / "out" / "results.jsonl") if c["type"] == "cell"]
    acc = {m: np.mean([c["accuracy"] for c in cells if c["method"] == m]) for m in ("calibrated", "dect", "auto")}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## auto's choices" in report
    best = max(("calibrated", "dect"), key=acc.get)
    row = next(line for line in report.splitlines() if line.startswith("| toy | 4 |"))
    assert row == (f"| toy | 4 | {100 * acc['auto']:.1f} | {100 * acc['dect']:.1f} | {100 * acc[best]:.1f} "
                   f"({'calibrated zero-shot' if best == 'calibrated' else 'DecT'}) |")
    assert sum("| auto | toy | 4 | " in line for line in report.splitlines()) == 1


def test_auto_works_through_a_remote_api_with_output_edge_candidates_only(toy_task):
    from http_helpers import FakeOpenAI

    from edgetune.backends import FeatureCache, OpenAIBackend

    with FakeOpenAI(["bad", "great", "fine"], top=3, dim=8) as srv:
        be = OpenAIBackend("fake", srv.base_url, cache=FeatureCache(None), progress=False, timeout=5.0)
        train = toy_task.sample(4, seed=0)
        auto = Auto(be, candidates=FAST, ensemble=2, cv_folds=2, time_budget=60,
                    costly=["setfit", "adept"]).fit(train)
        assert be.total_queries == len(train) + 2  # the sample and the content-free prompts, nothing else
        log = auto.cv_results_["costly"]
        assert [e["candidate"] for e in log] == ["setfit", "adept"]
        assert [e["skipped"] for e in log] == ["the model is not in this process"] * 2
        assert auto.choice_ in auto.cv_results_["candidate"] and auto.predict(["a great film"])[0] in toy_task.labels


def test_run_auto_on_a_sample_too_small_to_cross_validate_says_what_is_needed(tmp_path, toy_dir, tiny_model_dir,
                                                                               capsys):
    task = toy_task_file(tmp_path, toy_dir)
    code = main(["run", "auto", "--task", str(task), "--model", str(tiny_model_dir), "--shots", "1", "--seeds", "0",
                 "--test-size", "8", "--no-progress", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "needs at least 2 examples of every label" in err[-1] and "fallback='dect'" in err[-1]
