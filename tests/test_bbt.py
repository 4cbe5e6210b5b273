"""BBT (CMA-ES black-box prompt search) on tiny random models."""

import numpy as np
import pytest
import torch

from edgetune.errors import IncompatibleError
from edgetune.methods import BBT, ParamError, load

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
    assert [c for c, _ in h["dev_accuracy"]] == [0, 8, 16] and h["dev_queries"] == 3 * m.dev_size_  # start first
    assert m.trainable_params_ == 8
    assert all(torch.equal(p, weights[n]) for n, p in be.model.named_parameters())  # frozen, no gradients
    assert not any(p.requires_grad for p in m.module_.parameters())
    preds = m.predict(TEXTS)
    assert set(preds) <= {"negative", "positive"}
    path = m.save(tmp_path / "bbt")
    again = load(path, model=be)
    np.testing.assert_allclose(again.class_scores(TEXTS), m.class_scores(TEXTS), atol=1e-5)
    with pytest.raises(IncompatibleError):
        load(path, model=make_backend(kind, seed=3))


def test_search_lowers_the_training_loss_and_is_deterministic(make_backend, toy_task):
    be = make_backend("causal")
    train = toy_task.sample(4, seed=0)
    kw = {**TINY, "budget": 80, "popsize": 8, "intrinsic_dim": 10}
    m = BBT(be, **kw).fit(train)
    m._batches = [(be.collate(m.encode(train)), torch.tensor(train.label_ids()))]
    start_loss, _ = m.losses([np.zeros(10)])[0]
    assert m.history_["best_train_loss"] < start_loss - 1e-3  # z = 0 (no prompt signal) is beaten
    again = BBT(be, **kw).fit(train)
    assert again.history_["loss"] == m.history_["loss"]
    np.testing.assert_array_equal(again.z_, m.z_)


def test_budget_must_cover_a_generation(make_backend, toy_task):
    with pytest.raises(ParamError, match="at least one generation"):
        BBT(make_backend("causal"), budget=10, popsize=20).fit(toy_task.sample(2, 0))


def loss_alone(m, z):
    """A candidate's (loss, accuracy) with it set as the model's one prompt, batch by batch."""
    m.set_candidate(z)
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for batch, y in m._batches:
            logits = m.module_(batch.input_ids, batch.attention_mask, batch.position)
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return total / n, correct / n


@pytest.mark.parametrize(("max_rows", "max_tokens"), [(3, 32768), (1024, 32768), (1024, 60)])
def test_candidates_scored_together_match_one_at_a_time(make_backend, toy_task, kind, max_rows, max_tokens,
                                                        monkeypatch):
    """Sharing forward passes between candidates (split into chunks by rows or by tokens, or not) changes nothing
    but speed; a token bound caps every pass."""
    be = make_backend(kind)
    train = toy_task.sample(4, seed=0)
    m = BBT(be, **TINY).fit(train)
    ids = m.encode(train)
    y = torch.tensor(train.label_ids())
    m._batches = [(be.collate(ids[:5]), y[:5]), (be.collate(ids[5:]), y[5:])]  # two batches of different widths
    zs = [np.random.default_rng(i).normal(size=8) * 3 for i in range(5)]
    m.max_rows, m.max_tokens = max_rows, max_tokens
    seen = []
    forward = type(m.module_).forward

    def spy(self, input_ids, *args, **kwargs):
        seen.append(input_ids.numel() + len(input_ids) * m.prompt_tokens)
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(type(m.module_), "forward", spy)
    together = m.losses(zs)
    monkeypatch.undo()
    widest = max(b.input_ids.shape[1] for b, _ in m._batches) + m.prompt_tokens
    assert max(seen) <= max(max_tokens, 5 * widest)  # at most the bound, or one candidate's rows when that is more
    one_by_one = [loss_alone(m, z) for z in zs]
    np.testing.assert_allclose([t[0] for t in together], [o[0] for o in one_by_one], rtol=1e-4, atol=1e-5)
    assert [t[1] for t in together] == [o[1] for o in one_by_one]
    assert len({round(t[0], 6) for t in together}) > 1  # the candidates really differ
    m.max_rows = 0
    again = BBT(be, **TINY, max_rows=0).fit(train)  # one candidate per pass: the same search
    np.testing.assert_allclose(again.history_["loss"], m.history_["loss"], rtol=1e-4)
