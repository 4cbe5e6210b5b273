"""Measures beyond accuracy, natural-distribution samples and class_weight="balanced"."""

import json

import numpy as np
import pytest
import yaml
from conftest import toy_task_file
from test_methods import FakeBackend, fit

from edgetune.backends import Features
from edgetune.bench.records import read_results
from edgetune.cli import main
from edgetune.data.example import Dataset, Example
from edgetune.data.sampling import sample_natural
from edgetune.errors import DataError, EdgetuneError
from edgetune.methods import DecT, LinearProbe
from edgetune.methods.core.decoders import class_weight_tensor
from edgetune.metrics import METRIC_NAMES, check_metric, confusion, per_class, scores


def test_measures_tell_a_majority_guesser_from_a_classifier():
    y = np.array([0] * 8 + [1, 2])
    majority = np.zeros(10, dtype=int)
    got = scores(y, majority, 3)
    assert got["accuracy"] == pytest.approx(0.8)
    assert got["balanced_accuracy"] == pytest.approx(1 / 3)  # recall 1, 0, 0
    assert got["macro_f1"] == pytest.approx((2 * 0.8 / 1.8) / 3)  # F1 of class 0 = 2·0.8·1/1.8; others 0
    assert scores(y, y, 3) == dict.fromkeys(METRIC_NAMES, 1.0)
    matrix = confusion(y, majority, 3)
    assert matrix == [[8, 0, 0], [1, 0, 0], [1, 0, 0]]
    precision, recall = per_class(matrix)
    np.testing.assert_allclose(precision, [0.8, 0, 0])
    np.testing.assert_allclose(recall, [1, 0, 0])
    with pytest.raises(EdgetuneError, match="unknown metric 'f2'; known: accuracy, macro_f1"):
        check_metric("f2")


def pool(counts):
    examples = [Example(f"{lab} {i}", None, lab, f"{lab}-{i}") for lab, n in counts.items() for i in range(n)]
    return Dataset(tuple(examples), tuple(counts), name="pool")


def test_a_natural_sample_follows_the_pool_and_holds_every_label():
    p = pool({"a": 900, "b": 90, "c": 10})
    draws = [sample_natural(p, 50, seed) for seed in range(40)]
    for d in draws:
        assert len(d) == 50 and {e.label for e in d} == {"a", "b", "c"}
    share = np.mean([[sum(e.label == lab for e in d) / 50 for lab in "abc"] for d in draws], axis=0)
    expected = [(1 + 47 * q) / 50 for q in (0.9, 0.09, 0.01)]  # one of each first, then the pool's shares
    np.testing.assert_allclose(share, expected, atol=0.02)
    again = sample_natural(p, 50, 7)
    assert [e.id for e in again] == [e.id for e in draws[7]]  # seeded
    assert [e.id for e in draws[0]] != [e.id for e in draws[1]]
    with pytest.raises(DataError, match="--n 2 is smaller than the number of labels"):
        sample_natural(p, 2, 0)


def imbalanced(counts, seed, d=16):
    """Overlapping clusters: a decoder that ignores the counts leans to the big class."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    centers = np.eye(3, d) * 1.6
    hidden = centers[y] + rng.normal(size=(len(y), d))
    scores_ = rng.normal(size=(len(y), 3))
    return Features(scores_.astype(np.float32), hidden.astype(np.float32)), y


@pytest.mark.parametrize("make", [lambda w: DecT(FakeBackend(), class_weight=w, lam=0.0, epochs=30),
                                  lambda w: LinearProbe(FakeBackend(), class_weight=w, C=0.05)])
def test_balanced_class_weight_raises_macro_f1_on_an_imbalanced_sample(make):
    gains = []
    for seed in range(3):
        train, y = imbalanced((60, 6, 6), seed)
        test, yt = imbalanced((200, 200, 200), seed + 100)
        f1 = {w: scores(yt, fit(make(w), train, y).decision_features(test).argmax(1), 3)["macro_f1"]
              for w in (None, "balanced")}
        gains.append(f1["balanced"] - f1[None])
    assert np.mean(gains) > 0.05, gains


def test_class_weight_tensor_is_scikit_learns_balanced_weights():
    y = np.array([0] * 6 + [1, 1, 2])
    w = class_weight_tensor("balanced", y, 4).numpy()
    np.testing.assert_allclose(w, [9 / (3 * 6), 9 / (3 * 2), 9 / 3, 1.0])  # a class absent from y: weight 1
    assert class_weight_tensor(None, y, 3) is None
    with pytest.raises(Exception, match="class_weight must be one of None, 'balanced'"):
        DecT(FakeBackend(), class_weight="inverse")._validate_params()


def test_records_carry_every_measure_and_the_report_adds_per_class_views(tmp_path, toy_dir, tiny_model_dir):
    toy_task_file(tmp_path, toy_dir)
    cfg = {"name": "measures", "models": [str(tiny_model_dir)], "tasks": ["toy.yaml"], "shots": [5], "seeds": [0],
           "test_size": 8, "output": str(tmp_path / "out"), "sample": "natural",
           "methods": ["calibrated", {"name": "linear_probe", "label": "probe-bal",
                                      "params": {"class_weight": "balanced"}}]}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["bench", str(tmp_path / "b.yaml"), "--no-progress", "--per-class"]) == 0
    cells = [c for c in read_results(tmp_path / "out" / "results.jsonl") if c["type"] == "cell"]
    assert len(cells) == 2
    for c in cells:
        assert set(METRIC_NAMES) <= set(c) and c["labels"] == ["negative", "positive"]
        assert np.asarray(c["confusion"]).sum() == c["n_test"] == 8
        assert c["sample"] == "natural" and c["n_train"] == 5 and c["task_name"] == "toy-natural"
        predicted_right = np.trace(np.asarray(c["confusion"])) / 8
        assert predicted_right == pytest.approx(c["accuracy"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "macro-F1 %" in report and "balanced accuracy %" in report and "## Per class" in report
    assert (tmp_path / "out" / "confusion-toy-natural-calibrated-5shot.png").exists()
    assert json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])["config"]["sample"] == "natural"


@pytest.mark.parametrize("argv, message", [
    (["--metric", "f2"], "argument --metric: invalid choice: 'f2'"),
    (["--sample", "natural", "--n", "1"], "--n 1 is smaller than the number of labels of toy (2)"),
    (["--sample", "natural"], "--sample natural needs --n N"),
    (["--n", "8"], "--n is for --sample natural"),
])
def test_run_refuses_a_bad_measure_or_sample_in_one_line(argv, message, tmp_path, toy_dir, capsys):
    task = toy_task_file(tmp_path, toy_dir)
    try:
        code = main(["run", "calibrated", "--task", str(task), "--no-progress", *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_run_prints_the_metric_asked_for(tmp_path, toy_dir, tiny_model_dir, capsys):
    task = toy_task_file(tmp_path, toy_dir)
    assert main(["run", "linear_probe", "--task", str(task), "--model", str(tiny_model_dir), "--shots", "4",
                 "--seeds", "0", "--test-size", "8", "--metric", "macro_f1", "--class-weight", "balanced",
                 "--no-progress", "-o", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "macro-F1 %" in out
    cell = next(c for c in read_results(tmp_path / "r" / "results.jsonl") if c["type"] == "cell")
    assert f"{100 * cell['macro_f1']:.1f}" in out and cell["params"]["class_weight"] == "balanced"


def test_a_gradient_method_weights_its_loss_by_class(toy_task, tiny_model_dir):
    from edgetune.methods import PromptTuning

    train = sample_natural(toy_task.load("train"), 9, 0)  # imbalanced: one label holds most examples
    labels = [e.label for e in train]
    assert len(set(labels)) == 2 and max(labels.count(lab) for lab in set(labels)) >= 6
    first = {}
    for w in (None, "balanced"):
        m = PromptTuning(str(tiny_model_dir), class_weight=w, steps=1, batch_size=9, prompt_tokens=2, dev_shots=1,
                         progress=False, eval_every=1).fit(train)
        first[w] = m.history_["loss"][0]
    assert first[None] != pytest.approx(first["balanced"], rel=1e-4)  # same start, same batch: only the weights differ
