"""DecT and its baselines through a real (tiny, random) model: fit, predict, save, load."""

import numpy as np
import pytest
from rich.console import Console

from edgetune import DecT, LinearProbe, load
from edgetune.backends import FeatureCache
from edgetune.bench import BenchConfig, MethodEntry, read_results, run_bench
from edgetune.errors import DataError, IncompatibleError, LabelWordError


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


def test_label_names_are_the_words_when_none_are_given(make_backend):
    """An intent-style task: label names of several tokens, no label words. Output-edge methods score each
    name's readable form as a token sequence; input-edge methods (single-token words) say what to do."""
    from edgetune.methods import get_method

    be = make_backend("causal")
    texts = ["send cash to my brother", "move funds to savings", "where is my new card", "card not here yet"] * 2
    labels = ["transfer_money", "transfer_money", "cardArrival", "cardArrival"] * 2
    clf = DecT(be, template="{text} Intent: {mask}", epochs=10).fit(texts, labels)
    assert clf.words_ == ["card arrival", "transfer money"]
    assert set(clf.predict(texts[:2])) <= {"cardArrival", "transfer_money"}
    zs = get_method("zeroshot")(be, template="{text} Intent: {mask}").fit(texts, labels)
    assert zs.predict_proba(texts[:1]).shape == (1, 2)
    with pytest.raises(LabelWordError, match=r"is \d tokens"):
        get_method("pt")(be, template="{text} Intent: {mask}", steps=1, progress=False).fit(texts, labels)


def test_runner_shares_features_and_second_run_is_free(make_backend, toy_task, tmp_path):
    be = make_backend("causal", cache=FeatureCache(tmp_path / "f.sqlite"))
    names = ("zeroshot", "calibrated", "linear_probe", "dect")
    config = BenchConfig(name="t", tasks=[toy_task], methods=[MethodEntry(n, n) for n in names], models=[be.name],
                         shots=[4], seeds=[0, 1], test_size=None)
    quiet = Console(quiet=True)
    first = read_results(run_bench(config, tmp_path / "a", progress=False, console=quiet, backends={be.name: be}))
    second = read_results(run_bench(config, tmp_path / "b", progress=False, console=quiet, backends={be.name: be}))
    cells = [x for x in first if x["type"] == "cell"]
    again = [x for x in second if x["type"] == "cell"]
    assert sum(x["queries"] for x in first if x["type"] == "extraction") > 0
    assert not [x for x in second if x["type"] == "extraction"]  # all from the cache
    assert {c["method"] for c in cells} == set(names) and len(cells) == 8
    assert [c["accuracy"] for c in cells] == [c["accuracy"] for c in again]
    n_test = len(toy_task.load("test"))
    assert all(c["n_test"] == n_test and c["n_train"] == 8 for c in cells)
    by = {(c["method"], c["seed"]): c for c in cells}
    assert by[("zeroshot", 0)]["queries"] == 0 and by[("calibrated", 0)]["queries"] == 2
    assert by[("dect", 0)]["queries"] == 8 + 2 and by[("dect", 0)]["trainable_params"] > 0
