"""Faults around saved models and non-finite training: each case is one clear, one-line error (or a warning and a
finite model), never a traceback, a NaN decoder or a long wait.

Saved folders are made with tiny backends, then their ``config.json`` or ``weights.safetensors`` is tampered with
(arrays of the wrong shape written with ``safetensors.numpy``)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_methods import FakeBackend  # just enough backend for prepared features

from edgetune.backends import Features
from edgetune.errors import DataError, EdgetuneError, IncompatibleError, ModelError
from edgetune.methods import METHODS, DecT, LinearProbe, MultiPromptDecoder, ParamError, ZeroShot, load
from edgetune.methods.core.decoders import LambdaSearch, train_rows

LABELS = ("neg", "pos", "mid")


def synthetic(n_per_class=8, d=24, seed=0, views=1):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    centers = rng.normal(size=(3, d)) * 3
    hidden = np.concatenate([centers[y] + rng.normal(size=(len(y), d)) for _ in range(views)], axis=1)
    scores = rng.normal(size=(len(y), 3 * views))
    return Features(scores.astype(np.float32), hidden.astype(np.float32), views=views), y


def fitted(method, views=1, labels=LABELS):
    feats, y = synthetic(views=views)
    cf = Features(np.zeros((2, 3 * views), np.float32), np.zeros((2, feats.hidden.shape[1]), np.float32), views=views)
    templates = [f"{{text}} {i} {{mask}}" for i in range(views)]
    return method.fit_prepared(feats, y, cf, labels=labels, template=templates if views > 1 else templates[0],
                               words=["a", "b", "c"])


def one_line(exc: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(exc.value)
    assert len(message.splitlines()) == 1, message
    for part in parts:
        assert part in message, message
    return message


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            config.pop(key, None)
        elif key == "params" and isinstance(value, dict):
            config["params"].update(value)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


def edit_weights(path: Path, **arrays) -> None:
    tensors = load_file(str(path / "weights.safetensors"))
    tensors.update({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    save_file(tensors, str(path / "weights.safetensors"))


# -- probe 1: numeric parameters are checked up front; training that diverges stops at its last finite step ------

@pytest.mark.parametrize("name,params,part", [
    ("dect", {"lam": float("nan")}, "lam"),
    ("dect", {"lam": -1.0}, "lam"),
    ("dect", {"lr": 1e308}, "lr"),
    ("dect", {"lr": float("inf")}, "lr"),
    ("dect", {"lam_grid": (0.5, float("nan"))}, "lam_grid"),
    ("dect", {"cv_folds": 1}, "cv_folds"),
    ("dect", {"weight_decay": -0.1}, "weight_decay"),
    ("dect", {"seed": -1}, "seed"),
    ("dect", {"epochs": 2.5}, "epochs"),
    ("mpd", {"lr": float("nan")}, "lr"),
    ("mpd", {"ot_eps": float("inf")}, "ot_eps"),
    ("mpd", {"lam": float("inf")}, "lam"),
    ("linear_probe", {"C": float("nan")}, "C"),
    ("linear_probe", {"max_iter": 0}, "max_iter"),
    ("knn", {"k": 0}, "k"),
    ("centroid", {"template": -1}, "template"), ("dect", {"template": 1.5}, "template"),
    ("batch_calibrated", {"batch": "all"}, "batch"),
    ("zeroshot", {"label_words": 5}, "label_words"),
    ("adept", {"lr_network": 1e308}, "lr_network"),
    ("adept", {"lr_prompt": float("nan")}, "lr_prompt"),
    ("adept", {"rank": 0}, "rank"),
    ("adept", {"dropout": float("nan")}, "dropout"),
    ("adept", {"warmup_ratio": "x"}, "warmup_ratio"),
    ("pt", {"prompt_lr_ratio": float("inf")}, "prompt_lr_ratio"),
    ("lora", {"lora_alpha": float("nan")}, "lora_alpha"),
    ("lora", {"target_modules": "q_proj"}, "target_modules"),
    ("sift", {"density": float("nan")}, "density"),
    ("bbt", {"sigma": float("inf")}, "sigma"),
    ("bbt", {"bound": -1.0}, "bound"),
    ("bbtv2", {"max_rows": -1}, "max_rows"),
    ("finetune", {"lr": 1e308}, "lr"),
    ("setfit", {"body_learning_rate": float("nan")}, "body_learning_rate"),
    ("setfit", {"max_steps": 0}, "max_steps"),
    ("dect", {"no_such_knob": 1}, "no_such_knob"),
])
def test_bad_parameters_are_refused_before_any_model_loads(name, params, part):
    with pytest.raises(ParamError) as exc:
        METHODS[name].validate_params(params)
    one_line(exc, part)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_validates_its_defaults_and_smoke_settings_without_a_model(name):
    cls = METHODS[name]
    cls.validate_params({})
    cls.validate_params(cls.smoke_params)
    method = cls(model="not-a-model-anywhere", **cls.smoke_params)
    method._validate_params()
    assert method._backend is None  # nothing was loaded


def unchecked(cls):
    """``cls`` with its parameter checks switched off: what a run would do with a value the checks let through."""
    return type(cls.__name__, (cls,), {"_validate_params": lambda self: None})


def test_dect_that_diverges_keeps_its_last_finite_decoder_and_warns():
    with pytest.warns(UserWarning, match=r"non-finite at step 1\b.*after 0 step"):
        m = fitted(unchecked(DecT)(FakeBackend(), lr=1e308, epochs=30, lam=0.0))
    assert m.epochs_ == 0 and m.stopped_ and all(np.isfinite(a).all() for a in (m.W_, m.protos_, m.radii_))
    assert np.isfinite(m.losses_).all()
    feats, y = synthetic()  # the training clusters
    assert np.isfinite(m.decision_features(feats)).all()
    assert (m.decision_features(feats).argmax(1) == y).mean() > 0.5  # the starting decoder, not "the first class"


def test_dect_with_cross_validation_that_diverges_still_saves_a_finite_model(tmp_path):
    with pytest.warns(UserWarning, match="non-finite"):
        m = fitted(unchecked(DecT)(FakeBackend(), lr=1e308))  # λ and epochs chosen by cross-validation
    assert all(np.isfinite(a).all() for a in (m.W_, m.protos_, m.radii_))
    path = m.save(tmp_path / "d")
    assert all(np.isfinite(a).all() for a in load_file(str(path / "weights.safetensors")).values())
    with pytest.raises(IncompatibleError) as exc:  # its saved lr is one no run accepts
        load(path, model=FakeBackend())
    one_line(exc, "lr must be")


def test_mpd_that_diverges_keeps_a_finite_decoder():
    with pytest.warns(UserWarning, match="non-finite"):
        m = fitted(unchecked(MultiPromptDecoder)(FakeBackend(), lr=1e308, epochs=10, lam=1.0), views=2)
    assert m.epochs_ < 10 and all(np.isfinite(a).all() for a in (m.W_, m.protos_, m.radii_))


def test_a_decoder_non_finite_from_the_start_is_a_one_line_error():
    with pytest.raises(EdgetuneError) as exc:
        fitted(unchecked(DecT)(FakeBackend(), lam=float("nan"), epochs=5))
    one_line(exc, "non-finite scores from its first step")


def test_a_row_that_diverges_stops_alone_and_is_never_chosen():
    """Two decoders in one batch; the first one's scores turn NaN at step 3: it is frozen at its step-2 parameters,
    its later losses and snapshot scores are NaN, and the other trains on exactly as it would alone."""
    import torch

    y = torch.tensor([0, 1, 0, 1])
    weights = torch.ones(2, 4)

    def run(poison: bool):
        p = torch.zeros(2, 2, requires_grad=True)
        opt = torch.optim.Adam([p], lr=0.1)
        calls = {"n": 0}

        def forward():
            calls["n"] += 1
            scores = (p[:, None, :] * torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])[None])
            if poison and calls["n"] >= 4:  # the 4th forward pass: step 3
                scores = scores * torch.tensor([float("nan"), 1.0])[:, None, None]
            return scores

        snaps = dict.fromkeys([2, 5])
        kept = []
        losses = train_rows(forward, opt, y, weights, 5, snaps,
                            lambda s: (kept.append(p.detach().clone()) or kept[-1], s), params=[p])
        return losses, snaps, p.detach().clone(), kept

    losses, snaps, final, kept = run(poison=True)
    clean, _, clean_final, _ = run(poison=False)
    assert torch.isfinite(losses[0, :3]).all() and torch.isnan(losses[0, 3:]).all()
    torch.testing.assert_close(losses[1], clean[1])  # the other row is untouched
    torch.testing.assert_close(final[1], clean_final[1])
    torch.testing.assert_close(final[0], kept[0][0])  # frozen where the step-2 snapshot was
    assert torch.isfinite(snaps[2][1]).all() and torch.isnan(snaps[5][1][0]).all()
    assert torch.isfinite(snaps[5][1][1]).all()
    search = LambdaSearch((1.0,), 0, weights[:1], torch.tensor([1.0]))
    assert search.choose({2: snaps[2], 5: (snaps[5][0], snaps[5][1][:1])}, y)[0] == 2  # not the diverged length


# -- probe 2: saved shapes and config must agree ---------------------------------------------------------------

@pytest.fixture
def saved_dect(tmp_path):
    return fitted(DecT(FakeBackend(), epochs=3, lam=1.0)).save(tmp_path / "dect")


@pytest.mark.parametrize("labels", [["neg", "pos"], ["neg", "pos", "mid", "extra"], ["neg"]])
def test_labels_that_disagree_with_the_decoder_are_refused(saved_dect, labels):
    edit_config(saved_dect, labels=labels)
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, str(saved_dect), "label")


def test_words_cut_and_duplicate_labels_are_refused(saved_dect):
    edit_config(saved_dect, label_words=["a", "b"])
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, "2 label word(s) for 3 label(s)")
    edit_config(saved_dect, label_words=["a", "b", "c"], labels=["neg", "neg", "mid"])
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, "distinct")


@pytest.mark.parametrize("array,shape", [("W", (128, 7)), ("protos", (2, 128)), ("radii", (4,)), ("mean", (3,)),
                                         ("content_free", (2, 2)), ("lam", (2,))])
def test_arrays_of_the_wrong_shape_are_refused(saved_dect, array, shape):
    edit_weights(saved_dect, **{array: np.zeros(shape, np.float32)})
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, str(saved_dect), repr(array), str(shape))


def test_a_decoder_of_another_hidden_size_or_proto_dim_is_refused(saved_dect):
    edit_config(saved_dect, hidden_dim=48)
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, "'W'", "hidden size 48")
    edit_config(saved_dect, hidden_dim=24, params={"proto_dim": 64})
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, "'W'", "(64, 24)")


@pytest.mark.parametrize("other", ["linear_probe", "calibrated", "mpd", "adept", "setfit", "no_such_method"])
def test_a_folder_relabelled_as_another_method_is_refused(saved_dect, other):
    edit_config(saved_dect, method=other)
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, str(saved_dect))


def test_relabelled_between_methods_with_the_same_parameters(tmp_path):
    path = fitted(ZeroShot(FakeBackend())).save(tmp_path / "z")
    edit_config(path, method="calibrated")
    with pytest.raises(IncompatibleError) as exc:
        load(path, model=FakeBackend())
    one_line(exc, "'content_free'")


def test_knn_targets_outside_the_labels_are_refused(tmp_path):
    from edgetune.methods import KNN

    path = fitted(KNN(FakeBackend())).save(tmp_path / "k")
    edit_weights(path, targets=np.full(24, 7, np.int64))
    with pytest.raises(IncompatibleError) as exc:
        load(path, model=FakeBackend())
    one_line(exc, "label indices")


def test_mpd_checks_prompts_and_word_sets(tmp_path):
    path = fitted(MultiPromptDecoder(FakeBackend(), epochs=2, lam=1.0, templates=["{text} 0 {mask}",
                                                                                   "{text} 1 {mask}"]),
                  views=2).save(tmp_path / "m")
    load(path, model=FakeBackend())
    edit_config(path, templates=["{text} 0 {mask}"])  # one prompt where the decoder has two
    with pytest.raises(IncompatibleError) as exc:
        load(path, model=FakeBackend())
    one_line(exc, "1 prompt(s)")
    edit_config(path, templates=["{text} 0 {mask}", "{text} 1 {mask}"], params={"word_sets": 2})
    with pytest.raises(IncompatibleError) as exc:
        load(path, model=FakeBackend())
    one_line(exc, "word sets")


def test_input_edge_labels_and_words_must_agree(make_backend, toy_task, tmp_path):
    from edgetune.methods import PromptTuning

    be = make_backend("causal")
    m = PromptTuning(be, progress=False, **PromptTuning.smoke_params).fit(toy_task.sample(2, 0))
    path = m.save(tmp_path / "pt")
    edit_config(path, labels=["negative"])
    with pytest.raises(IncompatibleError) as exc:
        load(path, model=be)
    one_line(exc, "2 label word(s) for 1 label(s)")


# -- probe 3: the format version ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version,part", [(99, "newer"), (..., "no valid format"), ("1", "no valid format"),
                                          (0, "no valid format"), (True, "no valid format")])
def test_format_versions_this_edgetune_cannot_read_are_refused(saved_dect, version, part):
    edit_config(saved_dect, format=version)
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, str(saved_dect), part)


def test_malformed_config_entries_are_one_line(saved_dect):
    for changes, part in (({"model_identity": 5}, "model_identity"), ({"params": []}, "params"),
                          ({"labels": "neg,pos"}, "labels"), ({"hidden_dim": "24"}, "hidden_dim")):
        config = json.loads((saved_dect / "config.json").read_text())
        edit_config(saved_dect, **changes)
        with pytest.raises(IncompatibleError) as exc:
            load(saved_dect, model=FakeBackend())
        one_line(exc, part)
        (saved_dect / "config.json").write_text(json.dumps(config))
    (saved_dect / "config.json").write_text("[1, 2]")
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, "holds a list")


def test_nan_weights_are_refused_on_load_and_never_saved(saved_dect, tmp_path):
    edit_weights(saved_dect, W=np.full((128, 24), np.nan, np.float32))
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model=FakeBackend())
    one_line(exc, "NaN")
    m = fitted(DecT(FakeBackend(), epochs=2, lam=1.0))
    m.W_ = np.full_like(m.W_, np.nan)
    with pytest.raises(EdgetuneError) as exc:
        m.save(tmp_path / "nan")
    one_line(exc, "NaN")
    assert not (tmp_path / "nan").exists()


# -- probe 4: parameters that size tensors are checked against the saved arrays before anything is built ---------

SHAPE_TAMPERING = [
    ("adept", {"rank": 10**9}), ("adept", {"rank": None, "budget_tokens": 10**9}), ("adept", {"prompt_tokens": 7}),
    ("dept", {"positions": 10**9}), ("dept", {"rank": 10**9}), ("pt", {"prompt_tokens": 10**7}),
    ("lamp", {"prompt_tokens": 10**6, "pool": 1}), ("lamp", {"rank": 3}), ("accept", {"codebook_size": 10**6}),
    ("accept", {"sub_dim": 16}), ("apt", {"prefix_tokens": 10**6}), ("apt", {"budget_tokens": 10**9}),
    ("bbtv2", {"prompt_tokens": 10**6}), ("bbt", {"prompt_tokens": 10**6}), ("lora", {"rank": 10**6}),
    ("lora", {"target_modules": ["k_proj"]}),
]


@pytest.fixture(scope="module")
def saved_input_edge(tmp_path_factory, tokenizer, toy_dir_module):
    """One saved folder per input-edge method (smoke settings, tiny causal model), copied per test."""
    from conftest import tiny_model

    from edgetune.backends import LocalBackend
    from edgetune.data import Task

    be = LocalBackend.from_model(tiny_model("causal", tokenizer.vocab_size), tokenizer, "causal", name="tiny-causal",
                                 progress=False)
    task = Task("toy", ("negative", "positive"), "{text} In summary, it was {mask}",
                {"negative": "bad", "positive": "great"}, data_dir=str(toy_dir_module))
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for name in sorted({n for n, _ in SHAPE_TAMPERING}):
        cls = METHODS[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[name] = cls(be, progress=False, **cls.smoke_params).fit(task.sample(2, 0)).save(root / name)
    return be, out


@pytest.fixture(scope="module")
def toy_dir_module(tmp_path_factory):
    from conftest import write_toy

    root = tmp_path_factory.mktemp("toy")
    write_toy(root)
    return root


@pytest.mark.parametrize("name,params", SHAPE_TAMPERING)
def test_shape_parameters_are_checked_against_the_saved_arrays_first(name, params, saved_input_edge, tmp_path,
                                                                     monkeypatch):
    import shutil

    from edgetune.methods.core.input_edge import InputEdgeMethod

    be, saved = saved_input_edge
    path = Path(shutil.copytree(saved[name], tmp_path / name))
    load(path, model=be)  # as saved: loads
    edit_config(path, params=params)

    def no_build(self):
        raise AssertionError("the model was set up before the saved shapes were checked")

    monkeypatch.setattr(InputEdgeMethod, "_setup", no_build)
    start = time.perf_counter()
    with pytest.raises(IncompatibleError) as exc:
        load(path, model=be)
    one_line(exc, str(path))
    assert time.perf_counter() - start < 5


def test_a_loaded_bbt_does_not_build_its_projection(saved_input_edge, tmp_path):
    import shutil

    be, saved = saved_input_edge
    path = Path(shutil.copytree(saved["bbt"], tmp_path / "bbt"))
    edit_config(path, params={"intrinsic_dim": 10**9})  # would be prompt_tokens·d × 1e9 numbers
    again = load(path, model=be)
    assert not hasattr(again, "projection_") and again.predict(["a fine film"])[0] in ("negative", "positive")


def test_sift_increments_for_a_module_the_model_lacks_are_refused(make_backend, toy_task, tmp_path):
    from edgetune.methods import SIFT

    be = make_backend("causal")
    path = SIFT(be, progress=False, **SIFT.smoke_params).fit(toy_task.sample(2, 0)).save(tmp_path / "s")
    tensors = load_file(str(path / "weights.safetensors"))
    key = next(k for k in tensors if k.endswith(".index"))
    edit_weights(path, **{key: np.array([10**9], np.int64), key[: -len("index")] + "delta": np.zeros(1, np.float32)})
    with pytest.raises(IncompatibleError) as exc:
        load(path, model=be)
    one_line(exc, "positions in that matrix")


# -- probe 5: an unknown model name fails fast, after what can be checked locally -------------------------------

def test_an_unknown_saved_model_fails_fast_when_the_hub_is_off(saved_dect, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    edit_config(saved_dect, model="no-such-org/no-such-model", model_identity="hub:no-such-org/no-such-model")
    again = load(saved_dect)  # the model is needed only to predict
    start = time.perf_counter()
    with pytest.raises(ModelError) as exc:
        again.predict(["a fine film"])
    one_line(exc, "no-such-org/no-such-model", "HF_HUB_OFFLINE")
    assert time.perf_counter() - start < 10


def test_an_unknown_model_fails_fast_when_the_hub_cannot_be_reached(saved_dect, monkeypatch):
    from edgetune.backends import models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_offline", lambda: False)  # huggingface_hub read it at import (CI sets it)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=5.0: False)
    edit_config(saved_dect, model="no-such-org/no-such-model", model_identity="hub:no-such-org/no-such-model")
    with pytest.raises(ModelError) as exc:
        load(saved_dect).predict(["x"])
    one_line(exc, "cannot be reached")


def test_a_model_name_that_cannot_be_the_trained_model_is_refused_before_loading(saved_dect, monkeypatch):
    from edgetune.backends import models

    def no_hub(name):
        raise AssertionError("the hub was asked before the identity check")

    monkeypatch.setattr(models, "check_hub", no_hub)
    edit_config(saved_dect, model="no-such-org/no-such-model")  # the identity is still the fake backend's
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect).predict(["x"])
    one_line(exc, "trained on model", "hub:no-such-org/no-such-model")
    with pytest.raises(IncompatibleError) as exc:
        load(saved_dect, model="smollm2-135m")  # a packaged model: its identity is its package version
    one_line(exc, "trained on model")


def test_a_saved_model_on_a_local_folder_is_checked_against_the_folder(tiny_model_dir, tmp_path, tokenizer,
                                                                        toy_task):
    from conftest import tiny_model

    from edgetune.backends import load_backend

    be = load_backend(str(tiny_model_dir), cache=None, progress=False)
    path = ZeroShot(be).fit(toy_task.sample(2, 0)).save(tmp_path / "z")
    assert load(path).predict(["a fine film"])[0] in ("negative", "positive")
    other = tmp_path / "other-model"
    tiny_model("causal", tokenizer.vocab_size, seed=5).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(IncompatibleError) as exc:
        load(path, model=str(other))
    one_line(exc, "trained on model")


# -- probe 6: predicting no inputs --------------------------------------------------------------------------------

def test_predicting_no_inputs_gives_an_empty_result():
    m = fitted(DecT(FakeBackend(), epochs=2, lam=1.0))  # the fake backend answers no query: none is asked
    assert m.predict([]) == []
    assert m.predict_proba([]).shape == (0, 3)
    assert m.class_scores([]).shape == (0, 3)
    with pytest.raises(EdgetuneError, match="not fitted"):
        DecT(FakeBackend()).predict([])


def test_an_input_edge_method_predicts_no_inputs_as_empty(make_backend, toy_task):
    from edgetune.methods import PromptTuning

    m = PromptTuning(make_backend("causal"), progress=False, **PromptTuning.smoke_params).fit(toy_task.sample(2, 0))
    assert m.predict([]) == [] and m.predict_proba([]).shape == (0, 2)


# -- probe 7: one-label training data -----------------------------------------------------------------------------

def test_one_label_training_data_is_a_data_error_before_fitting():
    with pytest.raises(DataError) as exc:
        LinearProbe(FakeBackend(), template="{text} {mask}").fit(["a", "b", "c"], ["x", "x", "x"])
    one_line(exc, "at least two labels", "'x'")
    with pytest.raises(DataError) as exc:
        fitted(LinearProbe(FakeBackend()), labels=("x",))
    one_line(exc, "at least two labels")


def test_a_linear_probe_with_one_label_present_is_a_data_error():
    feats, _ = synthetic()
    cf = Features(np.zeros((2, 3), np.float32), np.zeros((2, feats.hidden.shape[1]), np.float32))
    with pytest.raises(DataError) as exc:
        LinearProbe(FakeBackend()).fit_prepared(feats, np.zeros(len(feats), np.int64), cf, labels=LABELS,
                                                template="{text} {mask}", words=["a", "b", "c"])
    one_line(exc, "at least two labels", "'neg'")
    with pytest.raises(DataError) as exc:
        DecT(FakeBackend(), epochs=2).fit_prepared(feats, np.zeros(len(feats), np.int64), cf, labels=LABELS,
                                                   template="{text} {mask}", words=["a", "b", "c"])
    one_line(exc, "every label")


def test_run_with_a_one_label_train_file_is_one_line(capsys, tiny_model_dir, tmp_path):
    from edgetune.cli import main

    train = tmp_path / "one.jsonl"
    train.write_text("".join(json.dumps({"text": f"text {i}", "label": "x"}) + "\n" for i in range(6)))
    code = main(["run", "linear_probe", "--train", str(train), "--test", str(train), "--template", "{text} {mask}",
                 "--shots", "2", "--seeds", "0", "--model", str(tiny_model_dir), "--no-progress",
                 "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "at least two" in err and "'x'" in err
