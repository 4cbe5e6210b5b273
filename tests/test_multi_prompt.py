"""Multi-prompt decoding: DecT's decoder over several prompts per input, matched by optimal transport."""

import numpy as np
import pytest
import torch
from conftest import TEMPLATES

from edgetune import DecT, load
from edgetune.backends import Features
from edgetune.methods import (
    MultiPromptDecoder,
    ParamError,
)


def test_one_prompt_is_dect_exactly(make_backend, toy_task):
    """With one prompt the transport is trivial: the same initialisation, λ search and decoder as DecT."""
    be = make_backend("causal")
    train = toy_task.sample(6, seed=0)
    dect = DecT(be, seed=3, solver="full").fit(train)  # mpd learns the whole projection, as DecT's full solver
    mpd = MultiPromptDecoder(be, prompts=1, seed=3).fit(train)
    assert mpd.lam_ == dect.lam_ and mpd.cv_accuracy_ == pytest.approx(dect.cv_accuracy_)
    np.testing.assert_allclose(mpd.W_, dect.W_, atol=1e-4)
    x = ["a wonderful film", "a dull mess", "fine"]
    np.testing.assert_allclose(mpd.class_scores(x), dect.class_scores(x), atol=1e-4)


def test_several_prompts_fit_predict_save_load_and_count_queries(make_backend, task3, tmp_path):
    be = make_backend("causal")
    train = task3.sample(4, seed=0)
    m = MultiPromptDecoder(be, prompts=3, epochs=5).fit(train)
    assert [t.text for t in m.templates_] == list(TEMPLATES)
    assert m.protos_.shape == (2, 3, 128) and m.mean_.shape == (3, 32)
    assert m.costs().queries == 3 * (len(train) + 2)  # one query per input and prompt (content-free included)
    before = be.total_queries
    proba = m.predict_proba(["a wonderful film", "a dull mess"])
    assert be.total_queries - before == 6 and np.allclose(proba.sum(1), 1, atol=1e-5)
    again = load(m.save(tmp_path / "mpd"), model=be)
    assert [t.text for t in again.templates_] == list(TEMPLATES)
    np.testing.assert_allclose(again.predict_proba(["a wonderful film", "a dull mess"]), proba, atol=1e-6)
    with pytest.raises(ParamError, match="prompts=5, but the task has 3 template"):
        MultiPromptDecoder(be, prompts=5).fit(train)
    with pytest.raises(ParamError, match="templates is empty"):
        MultiPromptDecoder(be, templates=[]).fit(train)


def test_several_label_word_sets_share_each_query_and_average_in_the_prior(make_backend, task3, tmp_path):
    """``word_sets=2``: each prompt is scored on both sets in its one query; the prior is the mean of every
    (prompt, set) calibration; saved and loaded, it predicts the same."""
    from dataclasses import replace

    from edgetune.methods.core.decoders import calibrate

    task = replace(task3, more_label_words=({"negative": "awful", "positive": "good"},))
    assert task.more_words == [["awful", "good"]]
    be = make_backend("causal")
    train = task.sample(4, seed=0)
    m = MultiPromptDecoder(be, prompts=2, word_sets=2, epochs=3).fit(train)
    assert m.words_ == ["bad", "great", "awful", "good"]
    assert m.costs().queries == 2 * (len(train) + 2)  # the second word set costs no query
    feats = m.features(train)
    assert feats.scores.shape == (len(train), 2 * 4) and feats.views == 2
    scores = feats.scores.reshape(len(train), 2, 4)
    cf = m.content_free_.reshape(2, 2, 4)
    expected = np.mean([calibrate(scores[:, p, s : s + 2], cf[:, p, s : s + 2]) for p in (0, 1) for s in (0, 2)], 0)
    np.testing.assert_allclose(m._prior(scores), expected, atol=1e-6)
    one = MultiPromptDecoder(be, prompts=2, epochs=3).fit(train)
    assert not np.allclose(one._prior(scores[:, :, :2]), expected)  # the second set changes the prior
    again = load(m.save(tmp_path / "mpd2"), model=be)
    np.testing.assert_allclose(again.predict_proba(["a wonderful film"]), m.predict_proba(["a wonderful film"]),
                               atol=1e-6)
    with pytest.raises(ParamError, match="word_sets=3, but the task has 2 label-word set"):
        MultiPromptDecoder(be, word_sets=3, prompts=1).fit(train)


def test_transport_matches_views_to_prototypes_in_any_order():
    """The OT distance finds the cheap matching (unlike the mean cost), whatever the prototypes' order."""
    m = MultiPromptDecoder(None, ot_eps=0.01, ot_iters=50)
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert float(m._transport(cost)) < 0.01 < float(cost.mean())
    assert float(m._transport(cost.flip(-1))) < 0.01  # prototypes swapped
    rng = torch.Generator().manual_seed(0)
    c = torch.rand(5, 3, 3, generator=rng)
    np.testing.assert_allclose(m._transport(c).numpy(), m._transport(c[..., [2, 0, 1]]).numpy(), atol=1e-5)


def test_views_of_stacked_features_round_trip():
    a = Features(np.ones((4, 2), np.float32), np.zeros((4, 3), np.float32), queries=4)
    b = Features(np.full((4, 2), 2, np.float32), np.ones((4, 3), np.float32), queries=1)
    s = Features.stack([a, b])
    assert s.views == 2 and s.queries == 5 and s.scores.shape == (4, 4) and s.take([0, 1]).views == 2
    np.testing.assert_array_equal(s.view(1).hidden, b.hidden)
