"""DecT and its baselines through a real (tiny, random) model: fit, predict, save, load."""

import json

import numpy as np
import pytest

from edgetune import DecT, LinearProbe, load
from edgetune.bench.experiment import run_output_edge, write_json
from edgetune.errors import DataError, IncompatibleError


def test_fit_predict_save_load_through_a_backend(make_backend, toy_task, tmp_path, kind):
    be = make_backend(kind)
    train = toy_task.sample(4, seed=0)
    clf = DecT(be, epochs=20).fit(train)
    preds = clf.predict(["a wonderful film", "a dull mess"])
    assert set(preds) <= {"negative", "positive"} and len(preds) == 2
    assert clf.predict("single string") in (["negative"], ["positive"])
    proba = clf.predict_proba(["x", "y"])
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    again = load(clf.save(tmp_path / "m"), model=be)
    assert again.predict(["a wonderful film", "a dull mess"]) == preds
    with pytest.raises(IncompatibleError):
        load(tmp_path / "m", model=make_backend(kind, seed=7))


def test_fit_on_plain_texts_with_a_prompt(make_backend):
    be = make_backend("causal")
    clf = LinearProbe(be, template="{text} Overall it was {mask}", label_words={"neg": "bad", "pos": "great"})
    clf.fit(["good", "fine", "bad", "awful"], ["pos", "pos", "neg", "neg"])
    assert clf.labels_ == ("neg", "pos")
    with pytest.raises(DataError, match="unknown label"):
        clf.fit(["good"], ["meh"])
    with pytest.raises(DataError, match="no prompt"):
        DecT(be).fit(["good"], ["pos"])


def test_experiment_shares_features_and_second_run_is_free(make_backend, toy_task, tmp_path):
    be = make_backend("causal")
    first = run_output_edge(toy_task, be, 4, [0, 1])
    second = run_output_edge(toy_task, be, 4, [0, 1])
    n_test = len(toy_task.load("test"))
    assert first.extraction.queries > 0 and second.extraction.queries == 0
    assert {r.method for r in first.results} == {"zeroshot", "calibrated", "linear_probe", "dect"}
    assert [r.accuracy for r in first.results] == [r.accuracy for r in second.results]
    assert all(r.n_test == n_test and r.n_train == 8 for r in first.results)
    s = first.summary()["dect"]
    assert 0 <= s["mean"] <= 1 and s["n_seeds"] == 2
    path = write_json([first], tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data[0]["summary"]["dect"]["mean"] == s["mean"]
    assert len(data[0]["results"][0]["train_ids"]) == 8
