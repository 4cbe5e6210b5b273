"""BBT (CMA-ES black-box prompt search) on tiny random models."""

import numpy as np
import pytest
import torch

from edgetune.errors import IncompatibleError
from edgetune.methods import BBT, load

TINY = {"intrinsic_dim": 8, "prompt_tokens": 3, "popsize": 4, "budget": 16, "eval_every": 8, "progress": False}
TEXTS = ["a wonderful film", "a dull , boring mess that goes on", "fine"]


def test_searches_predicts_saves_and_loads(make_backend, toy_task, tmp_path, kind):
    be = make_backend(kind)
    weights = {n: p.clone() for n, p in be.model.named_parameters()}
    train = toy_task.sample(4, seed=0)
    m = BBT(be, **TINY).fit(train)
    h = m.history_
    assert h["calls"] == 16 and m.calls_ == 16  # one call = one candidate over the k-shot set
    assert h["train_queries"] == 16 * len(train)
    assert [c for c, _ in h["dev_accuracy"]] == [8, 16] and h["dev_queries"] == 2 * m.dev_size_
    assert m.trainable_params_ == 8
    assert all(torch.equal(p, weights[n]) for n, p in be.model.named_parameters())  # frozen, no gradients
    assert not any(p.requires_grad for p in m.module_.parameters())
    preds = m.predict(TEXTS)
    assert set(preds) <= {"negative", "positive"}
    path = m.save(tmp_path / "bbt")
    again = load(path, model=be)
    np.testing.assert_allclose(again.decision_function(TEXTS), m.decision_function(TEXTS), atol=1e-5)
    with pytest.raises(IncompatibleError):
        load(path, model=make_backend(kind, seed=3))


def test_search_lowers_the_training_loss_and_is_deterministic(make_backend, toy_task):
    be = make_backend("causal")
    train = toy_task.sample(4, seed=0)
    kw = {**TINY, "budget": 80, "popsize": 8, "intrinsic_dim": 10}
    m = BBT(be, **kw).fit(train)
    batches = [(m._batch(m.encode(train)), torch.tensor(train.label_ids()))]
    start_loss, _ = m._loss(batches, np.zeros(10))
    assert m.history_["best_train_loss"] < start_loss - 1e-3  # z = 0 (no prompt signal) is beaten
    again = BBT(be, **kw).fit(train)
    assert again.history_["loss"] == m.history_["loss"]
    np.testing.assert_array_equal(again.z_, m.z_)


def test_budget_must_cover_a_generation(make_backend):
    with pytest.raises(ValueError, match="at least one generation"):
        BBT(make_backend("causal"), budget=10, popsize=20)
