"""The ensemble (soft voting over output-edge methods) and picking one of a task's templates by number."""

import numpy as np
import pytest
from conftest import TEMPLATES

from edgetune import load
from edgetune.errors import DataError
from edgetune.methods import DecT, Ensemble, LinearProbe, ParamError


def test_a_number_picks_one_of_the_tasks_templates(make_backend, task3):
    be = make_backend("causal")
    train = task3.sample(4, seed=0)
    for i, text in enumerate(TEMPLATES):
        assert DecT(be, template=i, epochs=3).fit(train).template_.text == text
    with pytest.raises(DataError, match="has 3 template"):
        DecT(be, template=3, epochs=3).fit(train)
    with pytest.raises(DataError, match="comes from no task"):
        DecT(be, template=1, label_words={"negative": "bad", "positive": "great"}).fit(
            ["a great film", "a bad film"], ["positive", "negative"])


def test_ensemble_is_the_mean_of_its_members_probabilities_and_saves(make_backend, task3, tmp_path):
    """Each member is the method fitted alone (same sample, same backend); the ensemble's probabilities are their
    weighted mean; members on another prompt query only that prompt; a saved ensemble loads and predicts alike."""
    be = make_backend("causal")
    train = task3.sample(4, seed=0)
    members = [{"name": "dect", "epochs": 3}, "dect:template=2,epochs=3", "linear_probe"]
    ens = Ensemble(be, members=members, weights=[1, 1, 2], seed=5).fit(train)
    alone = [DecT(be, epochs=3, seed=5).fit(train), DecT(be, template=2, epochs=3, seed=5).fit(train),
             LinearProbe(be, seed=5).fit(train)]
    x = ["a wonderful film", "a dull mess", "fine", "charming and clever"]
    want = (alone[0].predict_proba(x) + alone[1].predict_proba(x) + 2 * alone[2].predict_proba(x)) / 4
    np.testing.assert_allclose(ens.predict_proba(x), want, atol=1e-5)
    assert ens.predict(x) == [ens.labels_[i] for i in want.argmax(1)]
    assert [m.template_.text for m in ens.members_] == [TEMPLATES[0], TEMPLATES[2], TEMPLATES[0]]
    costs = ens.costs()
    assert costs.queries == sum(m.costs().queries for m in alone) and costs.trainable_params > 0
    loaded = load(ens.save(tmp_path / "ens"), model=be)
    assert isinstance(loaded, Ensemble) and len(loaded.members_) == 3
    np.testing.assert_allclose(loaded.predict_proba(x), ens.predict_proba(x), atol=1e-6)


@pytest.mark.parametrize(("members", "message"), [
    (["dect"], "at least two"), ("dect", "at least two"), (["dect", "adept"], "not an output-edge"),
    (["dect", "nope"], "not a method"), (["dect", "dect:lam"], "key=value"),
    (["dect", {"name": "dect", "epochs": -1}], "epochs"), (["dect", "ensemble"], "not an output-edge"),
])
def test_bad_members_are_one_line_before_any_model_loads(members, message):
    with pytest.raises(ParamError, match=message):
        Ensemble.validate_params({"members": members})
    with pytest.raises(ParamError, match="one number per member"):
        Ensemble.validate_params({"members": ["dect", "knn"], "weights": [1.0]})


def test_a_registry_tasks_template_by_number_from_the_command_line_and_load_task():
    from edgetune.data import load_task

    sst2 = load_task("sst2")
    assert load_task("sst2", template="2").template == sst2.all_templates[2]
    assert load_task("sst2", template=0).template == sst2.template
    with pytest.raises(DataError, match="numbered 0 to 3"):
        load_task("sst2", template="4")
