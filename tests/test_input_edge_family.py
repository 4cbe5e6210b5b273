"""The rest of ADePT's comparison table: full fine-tuning, SIFT, ACCEPT, LAMP, adaptive prefix tuning, BBTv2.

Each is checked against what it must equal (a deep prompt with only a layer-0 vector is a plain prefix; an
APT prefix with its gates at one is the text prompt's cache; ACCEPT and LAMP at full rank rebuild their start
prompt), on what training may change (SIFT: only the chosen components) and on the one-line errors for
settings no model can honour. The trainer's checkpoint pruning is checked against its choice rule.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from prefix_helpers import first_block_only, gates_at_one, scores

from edgetune.errors import EdgetuneError, IncompatibleError
from edgetune.methods import ACCEPT, APT, LAMP, SIFT, BBTv2, FineTune
from edgetune.methods.core.config import BlackBoxConfig, ParamError
from edgetune.methods.core.selection import choose, unchoosable
from edgetune.methods.core.trainers import CMAESTrainer

QUICK = {"steps": 2, "batch_size": 4, "eval_every": 1, "progress": False}


@pytest.fixture(params=["llama", "gemma3"])
def causal_backend(request, make_backend, tokenizer):
    """A tiny Llama-style model (SmolLM2's architecture) and a tiny Gemma-3 (sliding-window layers, scaled
    embeddings, soft-capping): the two causal architectures edgetune ships."""
    if request.param == "llama":
        return make_backend("causal")
    import transformers as tf

    from edgetune.backends import LocalBackend

    torch.manual_seed(0)
    cfg = tf.Gemma3TextConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                              max_position_embeddings=64, sliding_window=8, pad_token_id=0,
                              layer_types=["sliding_attention", "full_attention"])
    return LocalBackend.from_model(tf.Gemma3ForCausalLM(cfg).eval(), tokenizer, "causal", name="tiny-gemma3",
                                   progress=False)


@pytest.mark.parametrize("select_by", ["loss", "accuracy"])
def test_pruned_checkpoints_are_never_chosen(select_by):
    rng = random.Random(0)
    for _ in range(300):
        n_dev = rng.choice([8, 32])
        checks, pruned = [], set()
        for step in range(rng.randint(2, 9)):
            checks.append((step, rng.randint(0, n_dev) / n_dev, rng.random(), step))
            pruned |= set(unchoosable(checks, select_by, n_dev))
            assert choose(checks, select_by, n_dev) not in pruned  # what training would keep now is kept
        assert len(pruned) < len(checks)


def test_full_finetuning_trains_a_copy_and_exports_a_loadable_model(make_backend, toy_task, tmp_path):
    from transformers import AutoModelForCausalLM

    backend = make_backend("causal")
    before = {k: v.clone() for k, v in backend.model.state_dict().items()}
    m = FineTune(backend, lr=1e-2, **QUICK).fit(toy_task.sample(4, seed=0))
    assert all(torch.equal(v, backend.model.state_dict()[k]) for k, v in before.items())  # the shared model
    assert m.trainable_params_ == sum(p.numel() for p in backend.model.parameters())
    changed = [k for k, v in m.module_.frozen.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    path = m.export(tmp_path / "export")
    again = AutoModelForCausalLM.from_pretrained(path)
    assert torch.equal(again.state_dict()[changed[0]], m.module_.frozen.state_dict()[changed[0]])


def test_sift_trains_exactly_its_budget_and_only_the_chosen_components(make_backend, toy_task, tmp_path):
    backend = make_backend("causal")
    m = SIFT(backend, budget_tokens=3, lr=1e-2, **QUICK).fit(toy_task.sample(4, seed=0))
    d = backend.model.get_input_embeddings().weight.shape[1]
    assert m.trainable_params_ == m.n_selected_ == 3 * d
    merged = m.merge().state_dict()
    moved = sum(int((merged[k] != v).sum()) for k, v in backend.model.state_dict().items())
    assert 0 < moved <= 3 * d
    saved = m.save(tmp_path / "sift")
    again = SIFT.load(saved, backend)
    np.testing.assert_allclose(again.class_scores(["fine"]), m.class_scores(["fine"]), atol=1e-5)
    assert sum(v.numel() for k, v in again.trainable_state().items() if k.endswith("delta")) == 3 * d


def test_sift_refuses_a_density_that_selects_nothing_and_a_budget_beyond_the_model(make_backend, toy_task):
    backend = make_backend("causal")
    with pytest.raises(ParamError, match="density=1e-09 selects no weight"):
        SIFT(backend, density=1e-9, **QUICK).fit(toy_task.sample(4, seed=0))
    with pytest.raises(ParamError, match="budget_tokens=100000 asks for"):
        SIFT(backend, budget_tokens=100_000, **QUICK).fit(toy_task.sample(4, seed=0))


def test_a_deep_prompt_with_only_a_first_layer_vector_is_a_plain_prefix(causal_backend, toy_task):
    m = BBTv2(causal_backend, budget=4, popsize=2, intrinsic_dim=4, prompt_tokens=3, progress=False).fit(
        toy_task.sample(4, seed=0))
    plain = first_block_only(m, torch.randn_like(m.module_.soft_prompt) * 0.1)
    texts = ["a wonderful film", "dull and long , a boring mess that goes on and on"]
    torch.testing.assert_close(scores(m.module_, m, texts), scores(plain, m, texts), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        m.module_.layer_prompts[1] = torch.randn_like(m.module_.soft_prompt)  # a deeper block's vector matters
    assert not torch.allclose(scores(m.module_, m, texts), scores(plain, m, texts), atol=1e-4)
    assert m.trainable_params_ == 2 * 4  # two blocks × intrinsic_dim


def test_bbtv2_scores_candidates_together_as_one_by_one(make_backend, toy_task):
    m = BBTv2(make_backend("causal"), budget=4, popsize=2, intrinsic_dim=4, prompt_tokens=3, progress=False)
    m.fit(toy_task.sample(4, seed=0))
    zs = [np.random.default_rng(i).normal(size=m.search_dim) for i in range(3)]
    together = m.losses(zs)
    m.max_rows = 1
    alone = [m.losses([z])[0] for z in zs]
    np.testing.assert_allclose(together, alone, rtol=1e-4)


def test_bbtv2_refuses_a_budget_below_one_generation_per_block(make_backend, toy_task):
    with pytest.raises(ParamError, match="budget=3 calls cannot give each of the model's 2 blocks"):
        BBTv2(make_backend("causal"), budget=3, popsize=2, intrinsic_dim=4, progress=False).fit(
            toy_task.sample(4, seed=0))


def test_divide_and_conquer_changes_one_block_per_generation():
    seen = []

    class Problem:
        def losses(self, zs):
            seen.append(np.array(zs))
            return [(float(np.sum((z - 1) ** 2)), 0.0) for z in zs]

        def dev_accuracy_of(self, z):
            return None

    _, history = CMAESTrainer(BlackBoxConfig(budget=40, popsize=4, progress=False), dim=6, blocks=3).train(Problem())
    assert history["calls"] == 3 * 3 * 4  # whole rounds, as the reference: budget // (popsize · blocks)
    for gen, zs in enumerate(seen):
        block = gen % 3
        others = np.delete(zs.reshape(len(zs), 3, 2), block, axis=1)
        assert np.allclose(others, others[0])  # the other blocks are the same in every candidate
    assert history["best_train_loss"] < 6.0  # better than the start, z = 0


@pytest.mark.parametrize(("start_dev", "kept"), [(0.75, "start"), (0.5, "search")])
def test_a_search_is_kept_only_if_it_beats_its_start_on_dev(start_dev, kept):
    class Problem:  # the training loss falls away from z = 0; dev accuracy: start_dev at z = 0, else 0.625
        def losses(self, zs):
            return [(float(np.sum((z - 1) ** 2)), 0.0) for z in zs]

        def dev_accuracy_of(self, z):
            return start_dev if not np.any(z) else 0.625

    config = BlackBoxConfig(budget=24, popsize=4, eval_every=8, progress=False)
    z, history = CMAESTrainer(config, dim=4).train(Problem())
    assert history["dev_accuracy"][0] == (0, start_dev)  # the start is the first check
    assert history["best_train_loss"] < 4.0
    assert (not np.any(z)) == (kept == "start")
    assert history["best_call"] == (0 if kept == "start" else 8)


def test_apt_with_its_gates_at_one_reads_like_the_text_prompt(causal_backend, toy_task):
    m = APT(causal_backend, prefix_tokens=3, **QUICK).fit(toy_task.sample(4, seed=0))
    plain = gates_at_one(m, 3)
    texts = ["a wonderful film", "dull and long , a boring mess that goes on and on"]
    torch.testing.assert_close(scores(m.module_, m, texts), scores(plain, m, texts), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        m.module_.gates[1].bias.fill_(-3.0)  # a layer's gate closes part-way: what is read changes
    assert not torch.allclose(scores(m.module_, m, texts), scores(plain, m, texts), atol=1e-4)


@pytest.mark.parametrize("kind", ["masked", "seq2seq"])
def test_prefixes_refuse_a_model_without_a_key_value_cache(make_backend, toy_task, kind):
    with pytest.raises(IncompatibleError, match="apt: prefix_tokens needs a causal LM") as err:
        APT(make_backend(kind), prefix_tokens=2, **QUICK).fit(toy_task.sample(4, seed=0))
    assert "\n" not in str(err.value)
    with pytest.raises(IncompatibleError, match=r"bbtv2: prompt_tokens \(a prompt at every block\) needs a causal"):
        BBTv2(make_backend(kind), budget=4, popsize=2, intrinsic_dim=4, progress=False).fit(toy_task.sample(4, seed=0))


def test_a_causal_model_whose_blocks_are_not_listed_is_refused_naming_the_parameter():
    from edgetune.methods.core.prompted import decoder_layers

    class Odd(torch.nn.Module):
        base_model = torch.nn.Linear(2, 2)

    with pytest.raises(IncompatibleError, match="apt: prefix_tokens needs a causal LM whose blocks"):
        decoder_layers(Odd(), "apt", "prefix_tokens")


def test_apt_and_bbtv2_budgets(make_backend, toy_task):
    backend = make_backend("causal")
    m = APT(backend, budget_tokens=8, **QUICK).fit(toy_task.sample(4, seed=0))
    parts, tokens = m.param_parts_, m.prefix_tokens_
    # the budget counts the prefix (P-tuning v2's count): the longest prefix within it; the gates come on top
    per_token = parts["prefix"] // tokens
    assert parts["prefix"] <= 8 * 32 < parts["prefix"] + per_token
    assert parts["gates"] == len(m.module_.gates) * ((32 + 1) * tokens + 1)
    assert m.trainable_params_ == parts["prefix"] + parts["gates"]
    assert m.history_["param_parts"] == parts
    from edgetune.bench.report import _params
    from edgetune.bench.runner import training_summary

    recorded = training_summary(m.history_)["param_parts"]
    shown = _params({"trainable_params": m.trainable_params_, "param_parts": recorded})  # the report's cell
    assert shown == f"{m.trainable_params_:,} (prefix {parts['prefix']:,} + gates {parts['gates']:,})"
    with pytest.raises(ParamError, match="apt: budget_tokens=1 leaves no room"):
        APT(backend, budget_tokens=1, **QUICK).fit(toy_task.sample(4, seed=0))


def test_accept_and_lamp_start_from_their_prompt(make_backend, toy_task):
    backend = make_backend("causal")
    # full-rank codebooks / factors: the start prompt is rebuilt exactly, and ACCEPT's offsets start at zero
    a = ACCEPT(backend, prompt_tokens=4, sub_dim=8, codebook_size=8, offset_sub_dim=8, positions=8, budget_tokens=99,
               **QUICK)
    m = a.fit(toy_task.sample(4, seed=0))
    assert m.codebook_size_ == 8
    start = m.initial_prompt(m.module_.input_embedding(), 4, "text")
    fresh = type(m.module_)(m.module_.frozen, m.reader_, start, 8, 8, 8, m.offset_size_, 8)
    torch.testing.assert_close(fresh.prompt(1)[0], start, atol=1e-5, rtol=1e-4)
    emb = torch.randn(2, 5, 32)
    assert torch.equal(fresh.transform(emb, torch.ones(2, 5)), emb)
    lamp = LAMP(backend, prompt_tokens=4, rank=4, pool=2, **QUICK).fit(toy_task.sample(4, seed=0))
    p0 = lamp.initial_prompt(lamp.module_.input_embedding(), 4, "vocab")
    for core in ("full", "diagonal"):
        fresh = type(lamp.module_)(lamp.module_.frozen, lamp.reader_, p0, 4, 2, core)
        torch.testing.assert_close(fresh.prompt(1)[0], p0.view(2, 2, -1).mean(1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("core", ["full", "diagonal"])
def test_lamp_cores_count_and_train_as_declared(make_backend, toy_task, core):
    from edgetune.methods.lamp import lamp_params

    backend = make_backend("causal")
    m = LAMP(backend, prompt_tokens=8, pool=2, budget_tokens=3, core=core, lr_prompt=0.05,
             **QUICK).fit(toy_task.sample(4, seed=0))
    r, d = m.rank_, 32
    assert m.trainable_params_ == lamp_params(d, 8, r, core) <= 3 * d < lamp_params(d, 8, r + 1, core)
    assert m.module_.core.shape == ((r, r) if core == "full" else (r,))
    assert set(m.factor_lr_.values()) == {0.05}  # a number: one rate for every factor
    start = torch.linalg.svdvals(m.initial_prompt(m.module_.input_embedding(), 8, "vocab").double())[:r]
    assert not torch.allclose((m.module_.core if core == "diagonal" else m.module_.core.diagonal()).double(),
                              start.to(m.module_.core.device), atol=1e-6)  # the core trained


@pytest.mark.parametrize("cls, params, message", [
    (ACCEPT, {"budget_tokens": 60}, "accept: budget_tokens=60 leaves nothing for the offsets"),
    (ACCEPT, {"prompt_tokens": 4, "budget_tokens": 5, "positions": 8, "sub_dim": 8, "offset_sub_dim": 8},
     "accept: budget_tokens=5 leaves no room"),
    (ACCEPT, {"prompt_tokens": 4, "sub_dim": 5}, "accept: sub_dim=5 does not divide"),
    (LAMP, {"pool": 3}, "lamp: pool=3 must divide prompt_tokens=100"),
    (LAMP, {"prompt_tokens": 4, "budget_tokens": 0}, "lamp: budget_tokens must be a whole number ≥ 1, not 0"),
])
def test_settings_no_model_can_honour_are_one_line_naming_the_parameter(make_backend, toy_task, cls, params, message):
    with pytest.raises(EdgetuneError, match=message) as err:
        cls(make_backend("causal"), **params, **QUICK).fit(toy_task.sample(4, seed=0))
    assert "\n" not in str(err.value)


def test_factor_rates_move_a_product_prompt_as_far_as_prompt_tuning_moves_its_prompt():
    from edgetune.methods.core.prompted import factor_rates

    a, b = torch.full((6, 4), 2.0), torch.full((4, 5), -3.0)
    rates = factor_rates(lambda f: f["a"] @ f["b"], {"a": a, "b": b}, step=0.04)
    assert rates["a"] == rates["b"] == pytest.approx(0.04 / (4 * 3 + 4 * 2))
    # one step of every element by its rate, all moves adding up: the prompt moves by about the step
    moved = (a + rates["a"]) @ (b - rates["b"]) - a @ b
    assert moved.abs().mean() == pytest.approx(0.04, rel=0.01)


def test_black_box_projections_read_the_embeddings_as_the_model_does(causal_backend, toy_task):
    """BBT's and BBTv2's first projection std is ``projection_scale · σ̂ / (√intrinsic_dim · sigma)`` with σ̂ the std
    of the embeddings the model reads: Gemma multiplies its table by ``embed_scale`` (√d) in forward, and p0 has it."""
    from edgetune.methods import BBT

    train = toy_task.sample(4, seed=0)
    embedding = causal_backend.model.get_input_embeddings()
    raw = float(embedding.weight.detach().float().std())
    read = raw * float(getattr(embedding, "embed_scale", 1.0))
    if causal_backend.name == "tiny-gemma3":
        assert read == pytest.approx(raw * 32 ** 0.5, rel=1e-4)  # the scale the old rule missed
    kw = {"intrinsic_dim": 40, "prompt_tokens": 4, "popsize": 2, "eval_every": 4, "progress": False}
    bbt = BBT(causal_backend, budget=4, projection_scale=1.0, sigma=1.0, **kw).fit(train)
    assert float(bbt.projection_.std()) == pytest.approx(read / 40 ** 0.5, rel=0.05)
    p0 = bbt.p0_.float()
    assert float(p0.std()) == pytest.approx(read, rel=0.5)  # p0 (vocabulary rows as read) is on the same scale
    deep = BBTv2(causal_backend, budget=4, projection_scale=1.0, sigma=1.0, **kw).fit(train)
    assert deep.proj_std_[0] == pytest.approx(read / 40 ** 0.5, rel=1e-4)
