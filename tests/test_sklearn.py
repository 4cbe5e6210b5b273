"""edgetune methods as scikit-learn classifiers: the estimator protocol, scikit-learn's own checks where they
apply to text classifiers, model selection and pipelines, the inputs and label types a practitioner has."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn.utils.estimator_checks as checks
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from edgetune.errors import DataError
from edgetune.methods import METHODS, DecT, LinearProbe, load

#: scikit-learn's checks that apply to an estimator of texts that needs a prompt: the protocol ones
APPLICABLE = ["check_parameters_default_constructible", "check_no_attributes_set_in_init",
              "check_get_params_invariance", "check_set_params", "check_estimator_cloneable", "check_estimator_repr",
              "check_estimator_tags_renamed", "check_valid_tag_types", "check_mixin_order",
              "check_estimators_unfitted", "check_do_not_raise_errors_in_init_or_set_params"]
#: why the rest do not: they fit on random numeric matrices (an edgetune method reads texts through a prompt),
#: or test capabilities no edgetune method claims (sample weights, sparse input, partial_fit, array API)
NOT_APPLICABLE = {
    "numeric X": "checks such as check_fit2d_*, check_classifiers_train, check_supervised_y_2d fit on random "
                 "float matrices; edgetune's input is text, declared by the tag input_tags.string",
    "sample_weight": "no edgetune method takes sample weights",
    "sparse / array API / partial_fit": "not supported, and declared so by the tags",
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_scikit_learn_checks_that_apply_pass(name):
    cls = METHODS[name]
    for check in APPLICABLE:  # every constructor is made from its declaration: explicit keyword parameters
        getattr(checks, check)(name, cls())


TEXTS = ["a wonderful , moving film", "great acting and a great story", "warm , funny and smart", "a joy to watch",
         "a dull , boring mess", "terrible acting and a bad story", "cold , flat and stupid", "a pain to watch"]
Y = ["positive"] * 4 + ["negative"] * 4
PROMPT = {"template": "{text} In summary, it was {mask}", "label_words": {"negative": "bad", "positive": "great"}}


def test_clone_shares_a_loaded_model_and_set_params_resets_it(make_backend, tiny_model_dir):
    backend = make_backend("causal")
    m = DecT(backend, lam=1.0)
    c = clone(m)
    assert c.model is backend and c.lam == 1.0 and c.get_params() == m.get_params()
    by_name = DecT(str(tiny_model_dir))
    loaded = by_name.backend
    assert clone(by_name).backend is loaded  # loaded once: a grid search does not load the model again
    by_name.set_params(model=str(tiny_model_dir))
    assert by_name._backend is None
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        m.set_params(nope=1)
    assert m.get_params(deep=True) == m.get_params(deep=False)


def test_grid_search_over_a_pipeline_makes_no_query_after_the_first_fit(make_backend):
    backend = make_backend("causal")
    pipe = make_pipeline(FunctionTransformer(lambda xs: [x.lower() for x in xs]),
                         DecT(backend, epochs=5, **PROMPT))
    grid = GridSearchCV(pipe, {"dect__lam": [0.5, 2.0]}, cv=StratifiedKFold(2))
    grid.fit(TEXTS, Y)
    paid = backend.total_queries
    assert paid == len(TEXTS) + 2  # every text once, and the content-free prompts; never again per fold or λ
    assert grid.best_params_["dect__lam"] in (0.5, 2.0)
    assert set(grid.predict(["A JOY", "A BORE"])) <= {"negative", "positive"}  # two new texts: two queries
    paid += 2
    assert backend.total_queries == paid
    scores = cross_val_score(LinearProbe(backend, **PROMPT), TEXTS, Y, cv=StratifiedKFold(2))
    assert scores.shape == (2,) and backend.total_queries == paid  # cached features: no new query


def test_int_labels_come_back_as_ints_and_survive_save_and_load(make_backend, tmp_path):
    backend = make_backend("causal")
    y = np.array([1] * 4 + [0] * 4)
    m = DecT(backend, epochs=5, template=PROMPT["template"], label_words={0: "bad", 1: "great"}).fit(TEXTS, y)
    assert m.classes_.tolist() == [0, 1] and m.labels_ == ("0", "1")
    preds = m.predict(TEXTS)
    assert all(type(p) is int for p in preds)
    assert 0 <= m.score(TEXTS, y) <= 1
    again = load(m.save(tmp_path / "m"), model=backend)
    assert again.predict(TEXTS) == preds and again.classes_.tolist() == [0, 1]


def test_numeric_labels_sort_as_numbers(make_backend):
    backend = make_backend("causal")
    y = [10, 2, 10, 2, 10, 2, 10, 2]
    m = LinearProbe(backend, template="{text} {mask}", label_words={2: "bad", 10: "great"}).fit(TEXTS, y)
    assert m.classes_.tolist() == [2, 10]


def test_tables_and_arrays_are_read_row_by_row(make_backend):
    backend = make_backend("causal")
    m = LinearProbe(backend, **PROMPT).fit(pd.DataFrame({"text": TEXTS}), pd.Series(Y))
    want = m.predict(TEXTS)
    assert m.predict(pd.DataFrame({"review": TEXTS})) == want  # its only column
    assert m.predict(np.array(TEXTS)[:, None]) == want
    with pytest.raises(DataError, match=r"has \['review', 'stars'\]"):
        m.predict(pd.DataFrame({"review": TEXTS, "stars": range(8)}))
    with pytest.raises(DataError, match="one string"):
        m.fit("a single string", ["positive"])


def test_a_frame_is_read_from_the_columns_named(make_backend):
    backend = make_backend("causal")
    frame = pd.DataFrame({"review": TEXTS, "stars": range(8), "title": ["t"] * 8})
    m = LinearProbe(backend, text_col="review", **PROMPT).fit(frame, Y)
    assert m.predict(frame) == m.predict(TEXTS)  # the other columns are never read as texts
    assert clone(m).text_col == "review"  # a grid search keeps reading the same column
    with pytest.raises(DataError, match=r"no column 'body'; its columns are \['review', 'stars', 'title'\]"):
        LinearProbe(backend, text_col="body", **PROMPT).fit(frame, Y)
    pairs = LinearProbe(backend, text_col="review", text_b_col="title",
                        template="{text} / {text_b} In summary, it was {mask}",
                        label_words=PROMPT["label_words"]).fit(frame, Y)
    assert pairs.examples(frame)[0].text_b == "t"


def test_calibrated_classifier_and_metrics(make_backend):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.metrics import classification_report, f1_score

    backend = make_backend("causal")
    cal = CalibratedClassifierCV(LinearProbe(backend, **PROMPT), cv=2).fit(TEXTS, Y)
    proba = cal.predict_proba(TEXTS)
    assert proba.shape == (8, 2) and np.allclose(proba.sum(1), 1)
    assert list(cal.classes_) == ["negative", "positive"]
    m = LinearProbe(backend, **PROMPT).fit(TEXTS, Y)
    assert 0 <= f1_score(Y, m.predict(TEXTS), pos_label="positive") <= 1
    assert "negative" in classification_report(Y, m.predict(TEXTS))


def test_decision_function_has_scikit_learns_shape(make_backend):
    backend = make_backend("causal")
    m = LinearProbe(backend, **PROMPT).fit(TEXTS, Y)
    d = m.decision_function(TEXTS)
    assert d.shape == (8,)  # two classes: the score of classes_[1]
    assert m.predict(TEXTS) == [m.classes_[int(v > 0)] for v in d]
    assert m.class_scores(TEXTS).shape == (8, 2)
