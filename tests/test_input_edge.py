"""Input-edge methods (ADePT, DePT, prompt tuning, LoRA) on tiny random models."""

from collections import Counter

import numpy as np
import pytest
import torch

from edgetune.data import Example, Template
from edgetune.errors import EdgetuneError, IncompatibleError
from edgetune.methods import ADePT, DePT, LoRA, PromptTuning, load
from edgetune.methods.adept import adept_params
from edgetune.methods.dept import dept_params

FAST = {"steps": 6, "batch_size": 4, "eval_every": 3, "progress": False}
TEXTS = ["a wonderful film", "a dull , boring mess that goes on", "fine"]


def small(cls, backend, **kw):
    extra = {"prompt_tokens": 4, "budget_tokens": 8} if cls in (ADePT, DePT) else {}
    if cls is DePT:
        extra["positions"] = 16
    if cls is PromptTuning:
        extra = {"prompt_tokens": 8}
    if cls is LoRA:
        extra = {"budget_tokens": 8}
    return cls(backend, **{**FAST, **extra, **kw})


@pytest.mark.parametrize("cls", [ADePT, DePT, PromptTuning, LoRA])
def test_trains_predicts_saves_and_loads(cls, make_backend, toy_task, tmp_path, kind):
    be = make_backend(kind)
    method = small(cls, be).fit(toy_task.sample(4, seed=0))
    h = method.history_
    assert len(h["loss"]) == 6 and all(np.isfinite(h["loss"]))
    assert h["dev_accuracy"] and "best_step" in h  # dev split drawn from the pool, best kept
    preds = method.predict(TEXTS)
    assert len(preds) == 3 and set(preds) <= {"negative", "positive"}
    path = method.save(tmp_path / "adapter")
    again = load(path, model=be)
    np.testing.assert_allclose(again.class_scores(TEXTS), method.class_scores(TEXTS), atol=1e-5)
    with pytest.raises(IncompatibleError):
        load(path, model=make_backend(kind, seed=3))


def test_trainable_counts_match_the_budget(make_backend, toy_task):
    be = make_backend("causal")  # d = 32
    d = 32
    adept = ADePT(be, prompt_tokens=4, budget_tokens=10, **FAST).fit(toy_task.sample(2, 0))
    dept = DePT(be, prompt_tokens=4, budget_tokens=10, positions=16, **FAST).fit(toy_task.sample(2, 0))
    pt = PromptTuning(be, prompt_tokens=10, **FAST).fit(toy_task.sample(2, 0))
    assert pt.trainable_params_ == 10 * d
    assert adept.trainable_params_ == adept_params(d, 4, adept.rank_) <= 10 * d
    assert adept_params(d, 4, adept.rank_ + 1) > 10 * d  # the largest rank that fits
    assert dept.trainable_params_ == dept_params(d, 4, dept.rank_, 16) <= 10 * d
    lora = LoRA(be, budget_tokens=10, **FAST).fit(toy_task.sample(2, 0))
    assert lora.trainable_params_ > 0


def test_budget_rule_reproduces_the_papers_settings():
    assert ADePT.match_budget(768, 60, 100).rank == 19  # ADePT's t5-base setting
    assert DePT.match_budget(768, 60, 100, 256).rank == 30  # DePT's released checkpoints
    assert DePT.match_budget(768, 40, 100, 256).params == 76_800
    with pytest.raises(EdgetuneError, match="prompt_tokens"):
        ADePT.match_budget(768, 100, 100)


def test_offsets_start_at_zero_and_skip_padding(make_backend, toy_task):
    be = make_backend("causal")
    for cls in (ADePT, DePT):
        m = small(cls, be, steps=1)
        m.fit(toy_task.sample(2, 0))
        module = m.module_.eval()
        module.soft_prompt.data.zero_()
        emb = torch.randn(2, 5, 32)
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        fresh = cls(be, prompt_tokens=4, budget_tokens=8, **FAST, **({"positions": 16} if cls is DePT else {}))
        fresh.labels_, fresh.words_, fresh.template_ = m.labels_, m.words_, m.template_
        torch.manual_seed(0)
        fresh._setup()
        with torch.no_grad():
            np.testing.assert_allclose(fresh.module_.transform(emb, mask), emb, atol=0)  # zero-initialised
        with torch.no_grad():
            for p in module.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p))
            out = module.transform(emb, mask)
        assert torch.equal(out[0, 3:], emb[0, 3:])  # padding untouched
        assert not torch.allclose(out[0, :3], emb[0, :3])


def test_padding_does_not_change_predictions(make_backend, toy_task):
    m = small(ADePT, make_backend("causal")).fit(toy_task.sample(2, 0))
    together = m.class_scores(TEXTS)
    alone = np.concatenate([m.class_scores([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    # predictions are batched by length across batch boundaries, and come back in the order given
    across = m._predict_ids(m.encode(TEXTS), batch_size=2)
    np.testing.assert_allclose(across, alone, atol=1e-4)


@pytest.mark.parametrize("kind_", ["causal", "masked", "seq2seq"])
def test_merge_gives_the_same_logits_with_no_network(make_backend, toy_task, kind_):
    be = make_backend(kind_)
    m = small(ADePT, be).fit(toy_task.sample(2, 0))
    with torch.no_grad():  # make the network's effect large so the check means something
        m.module_.w2.weight.normal_(0, 0.5)
        m.module_.w2.bias.normal_(0, 0.5)
    before = m.class_scores(TEXTS)
    merged = m.merge()
    ids = m.encode(TEXTS)
    batch = be.collate(ids)
    with torch.no_grad():
        after = merged.module(batch.input_ids, batch.attention_mask, batch.position).numpy()
    np.testing.assert_allclose(after, before, atol=1e-4)
    assert not any(p.requires_grad for p in merged.module.parameters())
    assert sum(1 for _ in merged.module.modules() if hasattr(_, "w1")) == 0  # no extra network at inference
    # the backend's model is untouched
    new_table = merged.module.input_embedding().weight
    assert be.model.get_input_embeddings().weight.data_ptr() != new_table.data_ptr()
    # padding offsets were skipped before merging; after merging pads have the folded embedding, but they are
    # masked out, so batched and single predictions still agree
    with torch.no_grad():
        single = np.concatenate([merged.module(b.input_ids, b.attention_mask, b.position).numpy()
                                 for b in (be.collate([x]) for x in ids)])
    np.testing.assert_allclose(single, after, atol=1e-4)


def test_lora_leaves_the_shared_model_untouched(make_backend, toy_task):
    be = make_backend("causal")
    before = be.features([Example("x")], Template("{text} It was {mask}"), ["bad", "great"]).scores
    small(LoRA, be).fit(toy_task.sample(2, 0))
    be.cache = type(be.cache)(None)
    after = be.features([Example("x")], Template("{text} It was {mask}"), ["bad", "great"]).scores
    np.testing.assert_array_equal(before, after)
    assert not any("lora" in n for n, _ in be.model.named_parameters())


def test_training_is_deterministic(make_backend, toy_task):
    be = make_backend("causal")
    a = small(ADePT, be, seed=1).fit(toy_task.sample(2, 0)).history_["loss"]
    b = small(ADePT, be, seed=1).fit(toy_task.sample(2, 0)).history_["loss"]
    assert a == b


@pytest.mark.parametrize("cls", [ADePT, DePT, PromptTuning])
def test_shared_prefix_gives_the_same_logits_and_gradients(cls, make_backend, toy_task):
    """On a causal model the soft prompt's keys/values are computed once per batch: same numbers."""
    be = make_backend("causal")
    m = small(cls, be, steps=1).fit(toy_task.sample(2, 0))
    with torch.no_grad():
        for p in m.module_.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # make every trained piece matter
    batch = be.collate(m.encode(TEXTS))
    module = m.module_.train(False)
    results = []
    for share in (True, False):
        module.share_prefix = share
        module.zero_grad()
        logits = module(batch.input_ids, batch.attention_mask, batch.position)
        logits.logsumexp(1).sum().backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
        results.append((logits.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-4)
    for name in results[0][1]:
        torch.testing.assert_close(results[0][1][name], results[1][1][name], atol=1e-5, rtol=1e-3)


def test_adept_first_layer_starts_as_the_reference(make_backend, toy_task):
    """W1 uniform in ±1/√r (the reference's (d, r) matrix has fan-in r), b1 zero, W2 and b2 zero."""
    m = small(ADePT, make_backend("causal"), steps=1).fit(toy_task.sample(2, 0))
    fresh = ADePT(m.backend, **{**FAST, "prompt_tokens": 4, "budget_tokens": 8})
    fresh.labels_, fresh.words_, fresh.template_ = m.labels_, m.words_, m.template_
    fresh._setup()
    w1, r = fresh.module_.w1, fresh.rank_
    bound = 1 / np.sqrt(r)
    assert float(w1.weight.abs().max()) <= bound and float(w1.weight.abs().max()) > 0.8 * bound
    assert not w1.bias.any() and not fresh.module_.w2.weight.any() and not fresh.module_.w2.bias.any()


def test_auto_prompt_lr_follows_the_embedding_scale(make_backend, toy_task):
    be = make_backend("causal")
    scale = float(be.model.get_input_embeddings().weight.std())
    m = small(ADePT, be, steps=1, prompt_lr_ratio=0.5).fit(toy_task.sample(2, 0))
    assert m.history_["lr"]["lr_prompt"] == pytest.approx(0.5 * scale, rel=1e-3)
    assert m.history_["lr"]["lr_network"] == 1e-4  # the network's rate is scale-free: as given
    paper = small(PromptTuning, be, steps=1, lr_prompt=0.3).fit(toy_task.sample(2, 0))
    assert paper.history_["lr"]["lr_prompt"] == 0.3  # a number is used as given


@pytest.mark.parametrize("select_by", ["accuracy", "loss"])
def test_the_start_is_a_checkpoint_and_the_best_is_restored(make_backend, toy_task, select_by):
    m = small(ADePT, make_backend("causal"), steps=4, eval_every=1, lr_network=1.0, prompt_lr_ratio=50.0,
              select_by=select_by)
    m.fit(toy_task.sample(4, 0))
    h = m.history_
    acc, loss = dict(h["dev_accuracy"]), dict(h["dev_loss"])
    assert min(acc) == 0 and len(acc) == 5  # scored before the first step, then after each
    chosen = h["best_step"]
    assert h["best_dev_accuracy"] == acc[chosen] >= acc[0]  # never less accurate on dev than the start
    if select_by == "accuracy":  # the earliest of the most accurate checks
        assert chosen == min(s for s, a in acc.items() if a == max(acc.values()))
    else:  # the lowest dev loss among the checks as accurate as the start and within 2 examples of the best
        floor = max(acc[0], max(acc.values()) - 2 / m.dev_size_ - 1e-9)
        assert acc[chosen] >= floor and loss[chosen] == min(v for s, v in loss.items() if acc[s] >= floor)
    assert m.dev_scores() == pytest.approx((acc[chosen], loss[chosen]))  # the weights in use are the chosen ones


def test_the_dev_split_is_drawn_from_the_pool_outside_the_sample(make_backend, toy_task):
    m = small(PromptTuning, make_backend("causal"), steps=1, seed=3)
    sample = toy_task.sample(3, 3)
    dev = m.dev_split(sample)
    assert len(dev) == 6 and not set(dev.ids) & set(sample.ids)  # k per class, disjoint
    assert dev.ids == m.dev_split(sample).ids  # seeded
    m.fit(sample)
    assert m.dev_size_ == len(dev)  # what fit checks on
    assert m.dev_split(["a text"]) is None  # plain texts carry no pool


def test_a_class_short_of_dev_examples_shrinks_the_dev_split_evenly(make_backend, toy_task):
    """The pool holds 10 texts per class: at 7 shots 3 are left per class, so the dev split is 3 per class (it was
    dropped, leaving training to keep its last step); a class with nothing left drops it."""
    m = small(PromptTuning, make_backend("causal"), steps=1, seed=3)
    sample = toy_task.sample(7, 0)
    dev = m.dev_split(sample)
    assert dev is not None and sorted(Counter(dev.y).values()) == [3, 3] and not set(dev.ids) & set(sample.ids)
    m.set_params(dev_shots=2)
    assert sorted(Counter(m.dev_split(sample).y).values()) == [2, 2]  # fewer asked than left: as asked
    assert m.set_params(dev_shots=None).dev_split(toy_task.sample(10, 0)) is None  # nothing left


def test_the_dev_split_never_holds_a_held_out_validation_example(make_backend, toy_task):
    """A validation split held out of the train pool (a bench's ``eval: {split: heldout}``) is reserved: samples
    drawn from the rest carry its ids, and the dev split a method draws from the task's pool leaves them out (it
    used not to: on trec at 48 shots the rarest class's whole validation share sat in the dev split)."""
    from edgetune.data.sampling import draw, held_out

    val, rest = held_out(toy_task.load("train"), 3, 7)  # 10 per class: 3 held out, 7 left
    assert rest.reserved == set(val.ids) and not set(rest.ids) & set(val.ids)
    sample = draw(rest, 4, 0)
    assert sample.reserved == rest.reserved and draw(rest, 6, 0, "natural").reserved == rest.reserved
    dev = small(PromptTuning, make_backend("causal"), steps=1, seed=3).dev_split(sample)
    assert dev is not None and sorted(Counter(dev.y).values()) == [3, 3]  # 10 - 3 held out - 4 sampled
    assert not set(dev.ids) & (set(val.ids) | set(sample.ids))


def test_select_by_and_max_grad_norm_are_checked(make_backend, toy_task):
    with pytest.raises(EdgetuneError, match="select_by"):
        small(ADePT, make_backend("causal"), steps=1, select_by="f1").fit(toy_task.sample(2, 0))
    with pytest.raises(EdgetuneError, match="max_grad_norm"):
        small(PromptTuning, make_backend("causal"), steps=1, max_grad_norm=0).fit(toy_task.sample(2, 0))


def test_gradient_clipping_records_the_norm_before_clipping(make_backend, toy_task):
    be = make_backend("causal")
    clipped = small(PromptTuning, be, steps=3, max_grad_norm=1e-6).fit(toy_task.sample(2, 0))
    norms = clipped.history_["grad_norm"]
    assert len(norms) == 3 and all(n > 1e-6 for n in norms)  # each step's norm, measured before clipping
    assert "grad_norm" not in small(PromptTuning, be, steps=1, max_grad_norm=None).fit(toy_task.sample(2, 0)).history_
    assert PromptTuning().max_grad_norm is None and ADePT().max_grad_norm is None  # off by default


def test_non_finite_loss_stops_training_and_keeps_the_best(make_backend, toy_task, monkeypatch):
    m = small(ADePT, make_backend("causal"), steps=6, eval_every=1)
    real = ADePT.scores
    calls = {"n": 0}

    def poisoned(self, ids):
        out = real(self, ids)
        if self.module_.training:
            calls["n"] += 1
            if calls["n"] >= 3:
                return out * float("nan")
        return out

    monkeypatch.setattr(ADePT, "scores", poisoned)
    with pytest.warns(UserWarning, match="non-finite loss"):
        m.fit(toy_task.sample(2, 0))
    assert "step 3" in m.history_["stopped"] and len(m.history_["loss"]) == 2
    assert np.isfinite(m.class_scores(TEXTS)).all()


def test_bad_recipe_values_are_one_clear_error(make_backend, toy_task):
    be = make_backend("causal")  # a 64-token window
    for cls, bad, word in ((ADePT, {"prompt_tokens": 60}, "prompt_tokens"),
                           (PromptTuning, {"lr_prompt": -1.0}, "lr_prompt"),
                           (ADePT, {"lr_network": float("nan")}, "lr_network"), (DePT, {"steps": 0}, "steps"),
                           (PromptTuning, {"prompt_init": "glove"}, "prompt_init")):
        with pytest.raises(EdgetuneError, match=word):
            small(cls, be, **bad).fit(toy_task.sample(2, 0))


def test_prompt_initialisations(make_backend, toy_task):
    from edgetune.methods import BBT

    be = make_backend("causal")
    table = be.model.get_input_embeddings().weight
    text = small(PromptTuning, be, steps=1, prompt_init="text").fit(toy_task.sample(2, 0))
    words = be.tokenizer(text.init_text(), add_special_tokens=False)["input_ids"]
    assert "summary" in text.init_text() and "great" in text.init_text()
    prompt = text.module_.encoder.embedding.weight
    assert prompt.shape[0] == 8
    bbt = BBT(be, **BBT.smoke_params, progress=False).fit(toy_task.sample(2, 0))
    p0 = bbt._prompt(np.zeros(bbt.intrinsic_dim))
    torch.testing.assert_close(p0, table[1000:1000 + bbt.prompt_tokens].detach())  # the reference's p0
    zeros = BBT(be, **BBT.smoke_params, prompt_init="zeros", progress=False).fit(toy_task.sample(2, 0))
    assert not zeros._prompt(np.zeros(zeros.intrinsic_dim)).any()
    assert len(words) >= 1


def test_adept_reports_how_far_its_network_moves_embeddings(make_backend, toy_task):
    # plain texts: no dev split, so the last weights are kept (with one, the start may win)
    X, y = ["great fun", "a bad mess", "so good", "awful"], ["positive", "negative", "positive", "negative"]
    prompt = {"template": toy_task.template, "label_words": toy_task.label_words}
    m = small(ADePT, make_backend("causal"), steps=3, lr_network=1e-2, **prompt).fit(X, y)
    assert 0 < m.history_["offset_ratio"] < 10
    still = small(ADePT, make_backend("causal"), steps=3, lr_network=1e-12, **prompt).fit(X, y)
    assert still.history_["offset_ratio"] < 1e-6


def test_the_loss_rule_never_prefers_a_collapsed_check():
    from edgetune.methods.core.selection import choose

    # a run that collapsed after step 10 (trec, 96 dev examples): dev accuracy back at chance, and a loss
    # that is low only because the collapsed model is unsure of everything
    checks = [(0, 0.19, 3.70, None), (10, 0.42, 1.90, None), (20, 0.26, 1.85, None), (60, 0.23, 1.78, None)]
    assert checks[choose(checks, "loss", 96)][0] == 10
    assert checks[choose(checks, "accuracy", 96)][0] == 10
    # two checks two examples apart on a 32-example split: the lower loss wins; three apart: it does not
    close = [(0, 0.5, 2.0, None), (10, 0.8125, 0.6, None), (20, 0.75, 0.4, None)]
    assert close[choose(close, "loss", 32)][0] == 20
    far = [(0, 0.5, 2.0, None), (10, 0.8125, 0.6, None), (20, 0.71875, 0.4, None)]
    assert far[choose(far, "loss", 32)][0] == 10


def test_a_collapse_is_detected_against_the_gain_so_far():
    from edgetune.methods.core.config import GradientConfig
    from edgetune.methods.core.trainers import AdamWTrainer

    t = AdamWTrainer(GradientConfig(steps=10, batch_size=2))

    def run(*accs, n_dev=96, done=0):
        checks = [(10 * i, a, 1.0 - a, None) for i, a in enumerate(accs)]  # loss falls as accuracy rises
        return t._collapsed(checks, n_dev, done)

    assert run(0.19, 0.54, 0.26) == 1  # the GPU table's prompt tuning on trec: most of the gain lost
    assert run(0.19, 0.62, 0.56) is None  # an ordinary dip (a held-out ADePT run on trec)
    assert run(0.50, 0.60, 0.40) == 1  # fell below the start
    assert run(0.50, 0.50, 0.30) is None  # no gain over the start: nothing to protect
    assert run(0.50, 0.53, 0.50, n_dev=32) is None  # a loss within two dev examples is noise
    assert run(0.19, 0.54, 0.26, done=3) is None  # at most three rollbacks
    assert AdamWTrainer(GradientConfig(steps=10, batch_size=2, rollback=None))._collapsed(
        [(0, 0.19, 1, None), (10, 0.54, 1, None), (20, 0.26, 1, None)], 96, 0) is None  # off


def test_a_collapsed_run_goes_back_to_its_best_check_at_half_the_rate(make_backend, toy_task, monkeypatch):
    m = small(PromptTuning, make_backend("causal"), steps=3, eval_every=1, lr_prompt=0.3, warmup_ratio=0.0)
    script, states = iter([0.2, 0.6, 0.1, 0.1]), []

    def dev_scores():
        states.append({k: v.detach().clone() for k, v in m.trainable_state().items()})
        acc = next(script)
        return acc, 1.0 - acc

    monkeypatch.setattr(m, "dev_scores", dev_scores, raising=False)
    m.fit(toy_task.sample(4, 0))
    assert m.history_["rollbacks"] == [(2, 1)] and m.history_["best_step"] == 1
    # step 3 starts from step 1's weights with fresh AdamW moments, so it moves each element by the rate in
    # use: the linear decay's 1/3 of 0.3 at step 3, halved
    (key,) = states[1]
    moved = (states[3][key] - states[1][key]).abs().max().item()
    assert moved == pytest.approx(0.3 / 3 / 2, rel=1e-3)
    assert (states[2][key] - states[1][key]).abs().max().item() == pytest.approx(0.3 * 2 / 3, rel=0.05)  # (momentum)
    with pytest.raises(EdgetuneError, match="rollback"):
        small(PromptTuning, make_backend("causal"), steps=1, rollback=1.5).fit(toy_task.sample(2, 0))
