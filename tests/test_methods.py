import numpy as np
import pytest

from edgetune.backends import Features
from edgetune.errors import EdgetuneError, IncompatibleError
from edgetune.methods import METHODS, CalibratedZeroShot, DecT, LinearProbe, ZeroShot, load
from edgetune.methods.core.decoders import calibrate, log_softmax

LABELS = ("neg", "pos", "mid")


def synthetic(n_per_class=16, d=48, prior_quality=0.0, seed=0):
    """Clusters in hidden space; scores carry the label with a given strength (0 = pure noise)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    centers = rng.normal(size=(3, d)) * 3
    hidden = centers[y] + rng.normal(size=(len(y), d))
    scores = rng.normal(size=(len(y), 3)) + prior_quality * np.eye(3)[y] * 5
    return Features(scores.astype(np.float32), hidden.astype(np.float32)), y


def fit(method, feats, y, cf=None):
    cf = cf if cf is not None else Features(np.zeros((2, 3), np.float32), np.zeros((2, feats.hidden.shape[1])))
    return method.fit_prepared(feats, y, cf, labels=LABELS, template="{text} {mask}", words=["a", "b", "c"])


class FakeBackend:
    """Just enough backend for methods fitted on prepared features."""

    provides_weights = False

    def __init__(self, identity="fake:1"):
        self.identity, self.name, self.kind = identity, "fake", "causal"

    def settings(self):
        return {}


@pytest.fixture
def backend():
    return FakeBackend()


def test_registry_has_the_output_edge_methods():
    assert {"zeroshot", "calibrated", "linear_probe", "dect"} <= set(METHODS)


def test_calibration_removes_a_constant_label_bias():
    scores = np.array([[2.0, 0.0], [3.0, 2.5]])
    cf = np.array([[3.0, 0.0]])  # the prompt alone prefers label 0 by 3 nats
    out = calibrate(scores, cf)
    np.testing.assert_allclose(np.exp(out).sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(out, log_softmax(scores - np.array([3.0, 0.0])), atol=1e-6)


def test_dect_learns_clusters_when_prompt_scores_are_noise(backend):
    train, y = synthetic(seed=0)
    test, yt = synthetic(seed=0, n_per_class=50)
    dect = fit(DecT(backend, seed=0), train, y)
    zs = fit(ZeroShot(backend), train, y)
    assert (dect.decision_features(test).argmax(1) == yt).mean() > 0.9
    assert (zs.decision_features(test).argmax(1) == yt).mean() < 0.6
    assert dect.losses_[-1] < dect.losses_[0]


def test_cv_picks_a_large_lambda_when_only_the_prompt_is_informative(backend):
    train, y = synthetic(prior_quality=1.0, seed=1)
    rng = np.random.default_rng(2)
    noisy = Features(train.scores, rng.normal(size=train.hidden.shape).astype(np.float32))
    dect = fit(DecT(backend, seed=0, lam="cv"), noisy, y)
    assert dect.lam_ == max(dect.lam_grid)
    assert fit(DecT(backend, lam=None), noisy, y).lam_ == pytest.approx(1 / 16)
    assert fit(DecT(backend, lam=0.3), noisy, y).lam_ == pytest.approx(0.3)


def test_dect_is_deterministic_given_a_seed(backend):
    train, y = synthetic()
    a = fit(DecT(backend, seed=3), train, y).decision_features(train)
    b = fit(DecT(backend, seed=3), train, y).decision_features(train)
    c = fit(DecT(backend, seed=4, lam=1.0), train, y).decision_features(train)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("variant", [{}, {"prototypes": "random", "normalize": "none", "lam": None},
                                     {"normalize": "center", "calibrate": False}])
def test_dect_variants_train(backend, variant):
    train, y = synthetic()
    assert (fit(DecT(backend, **variant), train, y).decision_features(train).argmax(1) == y).mean() > 0.9


def test_bad_dect_parameters_are_refused_in_fit(backend):
    """scikit-learn's convention: the constructor stores, fit validates."""
    train, y = synthetic()
    for bad in ({"normalize": "weird"}, {"lam": "auto"}, {"proto_dim": 0}, {"lr": -1.0}):
        m = DecT(backend, **bad)
        assert m.get_params().items() >= bad.items()  # stored as given
        with pytest.raises(EdgetuneError, match=next(iter(bad))):
            fit(m, train, y)


def test_dect_needs_every_label(backend):
    train, y = synthetic()
    keep = y != 2
    with pytest.raises(EdgetuneError, match="mid"):
        fit(DecT(backend), Features(train.scores[keep], train.hidden[keep]), y[keep])


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_probe(backend, n_classes):
    train, y = synthetic()
    keep = y < n_classes
    feats = Features(train.scores[keep][:, :n_classes], train.hidden[keep])
    probe = LinearProbe(backend).fit_prepared(
        feats, y[keep], Features(np.zeros((2, n_classes), np.float32), np.zeros((2, 48), np.float32)),
        labels=LABELS[:n_classes], template="{text} {mask}", words=["a", "b", "c"][:n_classes])
    assert (probe.decision_features(feats).argmax(1) == y[keep]).mean() == 1.0


@pytest.mark.parametrize("cls", [DecT, LinearProbe, CalibratedZeroShot, ZeroShot])
def test_save_load_round_trip_and_model_check(tmp_path, backend, cls):
    train, y = synthetic()
    m = fit(cls(backend), train, y, cf=Features(np.array([[1.0, 0, 0], [0.5, 0, 0]], np.float32),
                                                np.zeros((2, 48), np.float32)))
    path = m.save(tmp_path / "saved")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]
    again = load(path, model=backend)
    assert type(again) is cls and again.labels_ == LABELS
    np.testing.assert_allclose(again.decision_features(train), m.decision_features(train), atol=1e-6)
    with pytest.raises(IncompatibleError, match="trained on model"):
        load(path, model=FakeBackend("fake:2"))


def test_save_refuses_to_clobber_a_foreign_folder(tmp_path, backend):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    train, y = synthetic()
    with pytest.raises(EdgetuneError, match="not a saved edgetune model"):
        fit(ZeroShot(backend), train, y).save(tmp_path / "x")
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_unfitted_method_says_so(backend):
    with pytest.raises(EdgetuneError, match="not fitted"):
        DecT(backend).predict(["x"])


def test_saved_backend_options_come_from_each_backend_class():
    """Each backend class says which recorded settings rebuild it (the kind first)."""
    from edgetune.methods.core.persistence import saved_backend_options

    # a model saved before formats were a choice (no dtype recorded) was fitted in float32 and reloads in it
    assert saved_backend_options({"backend_kind": "embedding", "backend_settings": {"scale": 5.0}}) == {
        "kind": "embedding", "scale": 5.0, "dtype": "float32"}
    assert saved_backend_options({"backend_kind": "embedding", "backend_settings": {}}) == {
        "kind": "embedding", "dtype": "float32"}
    assert saved_backend_options({"backend_kind": "causal", "backend_settings": {"max_length": 256}}) == {
        "kind": "causal", "dtype": "float32"}
    assert saved_backend_options({"backend_kind": "causal", "backend_settings": {"dtype": "bfloat16"}}) == {
        "kind": "causal", "dtype": "bfloat16"}
    assert saved_backend_options({"backend_kind": "openai", "backend_settings": {
        "top_logprobs": 500, "hidden": True, "floor": None, "scores": "logprobs"}}) == {
        "kind": "openai", "top_logprobs": 500, "hidden": True, "floor": None}
    assert saved_backend_options({}) == {}
