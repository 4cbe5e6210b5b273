import numpy as np
import pytest
from test_methods import LABELS, FakeBackend, fit, synthetic

from edgetune.backends import Features
from edgetune.errors import EdgetuneError
from edgetune.methods import KNN, BatchCalibratedZeroShot, Centroid, ZeroShot, load
from edgetune.methods.core.decoders import batch_calibrate, batch_prior, log_softmax


@pytest.fixture
def backend():
    return FakeBackend()


def biased(n=60, bias=(3.0, 0.0, 0.0), seed=0):
    """Label-word scores that carry the label (+2 nats) under a constant prompt bias towards class 0."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    scores = rng.normal(scale=0.5, size=(n, 3)) + 2.0 * np.eye(3)[y] + np.asarray(bias)
    return Features(scores.astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)), y


def test_batch_calibration_removes_a_prompt_bias_that_zero_shot_suffers(backend):
    train, y = biased(seed=0)
    test, yt = biased(seed=1, n=300)
    zs = fit(ZeroShot(backend), train, y)
    bc = fit(BatchCalibratedZeroShot(backend), train, y)
    assert (zs.decision_features(test).argmax(1) == yt).mean() < 0.5  # the bias wins most rows
    assert (bc.decision_features(test).argmax(1) == yt).mean() > 0.9
    # the prior is the log mean probability over the unlabelled training scores
    np.testing.assert_allclose(bc.prior_, np.log(np.exp(log_softmax(train.scores)).mean(0, keepdims=True)), rtol=1e-5)
    assert bc.costs().queries == len(train) and bc.costs().trainable_params == 0  # the training prompts only


def test_transductive_batch_calibration_uses_the_inputs_it_predicts(backend):
    train, y = biased(seed=0, bias=(0.0, 0.0, 0.0))  # no bias in training: its prior would change nothing
    test, yt = biased(seed=1, n=300)  # but the test prompts are biased
    on_train = fit(BatchCalibratedZeroShot(backend, batch="train"), train, y)
    on_test = fit(BatchCalibratedZeroShot(backend, batch="test"), train, y)
    assert (on_test.decision_features(test).argmax(1) == yt).mean() > (
        on_train.decision_features(test).argmax(1) == yt).mean() + 0.3
    assert on_test.costs().queries == 0
    with pytest.raises(EdgetuneError, match="batch"):
        on_test.decision_features(test.take([0]))  # one input is its own prior
    with pytest.raises(EdgetuneError, match="batch must be"):
        fit(BatchCalibratedZeroShot(backend, batch="dev"), train, y)


@pytest.mark.parametrize("cls", [Centroid, KNN])
def test_prototype_baselines_find_clusters_the_prompt_misses(backend, cls, tmp_path):
    train, y = synthetic(seed=0)
    test, yt = synthetic(seed=0, n_per_class=50)  # same cluster centres, new points
    m = fit(cls(backend), train, y)
    assert (m.decision_features(test).argmax(1) == yt).mean() > 0.9
    m.save(tmp_path / "m")
    again = load(tmp_path / "m", model=backend)
    np.testing.assert_allclose(again.decision_features(test), m.decision_features(test), rtol=1e-6)


def test_centroid_and_knn_ignore_a_common_offset_in_the_hidden_states(backend):
    train, y = synthetic(seed=0)
    test, yt = synthetic(seed=0, n_per_class=50)
    shift = np.full(train.hidden.shape[1], 1e3, np.float32)  # a huge shared direction, as in decoder LMs
    moved = Features(train.scores, train.hidden + shift), Features(test.scores, test.hidden + shift)
    for cls in (Centroid, KNN):
        m = fit(cls(backend), moved[0], y)
        assert (m.decision_features(moved[1]).argmax(1) == yt).mean() > 0.9


def test_knn_k_defaults_to_the_shots_and_classes_absent_from_training_are_never_predicted(backend):
    train, y = synthetic(seed=0, n_per_class=4)
    keep = y != 2  # class "mid" has no training example
    sub = Features(train.scores[keep], train.hidden[keep])
    m = fit(KNN(backend), sub, y[keep])
    assert int(m.k_[0]) == 4
    test, _ = synthetic(seed=0, n_per_class=10)
    assert not (m.decision_features(test).argmax(1) == 2).any()
    c = fit(Centroid(backend), sub, y[keep])
    assert not (c.decision_features(test).argmax(1) == 2).any()
    with pytest.raises(EdgetuneError, match="k must"):
        fit(KNN(backend, k=0), train, y)
    assert LABELS[2] == "mid"


def test_dect_can_take_its_prior_from_batch_calibration(backend, tmp_path):
    from edgetune.methods import DecT

    train, y = biased(seed=0)
    test, _ = biased(seed=1, n=300)
    m = fit(DecT(backend, calibrate="batch", epochs=5, lam=1.0), train, y)
    np.testing.assert_allclose(m._prior(test.scores), batch_calibrate(test.scores, batch_prior(train.scores)),
                               rtol=1e-5)
    assert not m.uses_content_free and DecT(backend).uses_content_free
    m.save(tmp_path / "d")
    np.testing.assert_allclose(load(tmp_path / "d", model=backend).decision_features(test),
                               m.decision_features(test), rtol=1e-5)
    with pytest.raises(EdgetuneError, match="calibrate must"):
        fit(DecT(backend, calibrate="content"), train, y)


def test_dect_span_solver_learns_only_inside_the_training_inputs_span(backend, tmp_path):
    import torch

    from edgetune.methods import DecT

    train, y = synthetic(seed=0)
    test, yt = synthetic(seed=0, n_per_class=50)
    full = fit(DecT(backend, seed=0), train, y)
    span = fit(DecT(backend, seed=0, solver="span"), train, y)
    assert span.W_.shape == full.W_.shape
    assert (span.decision_features(test).argmax(1) == yt).mean() > 0.9
    # W - W0 lies in the span of the (standardised) training inputs: no component orthogonal to it
    x = span._standardise(train.hidden).double()
    basis = torch.linalg.svd(x, full_matrices=False)[2]  # (r, d)
    gen = torch.Generator().manual_seed(0)
    d = train.hidden.shape[1]
    w0 = ((torch.rand(span.proto_dim, d, generator=gen) * 2 - 1) / d**0.5).double()
    delta = torch.from_numpy(span.W_).double() - w0
    assert float((delta - delta @ basis.T @ basis).abs().max()) < 1e-4
    span.save(tmp_path / "s")
    np.testing.assert_allclose(load(tmp_path / "s", model=backend).decision_features(test),
                               span.decision_features(test), rtol=1e-5)
    with pytest.raises(EdgetuneError, match="solver"):
        fit(DecT(backend, solver="lbfgs"), train, y)


def test_dect_distances_match_cdist():
    import torch

    from edgetune.methods import DecT

    g = torch.Generator().manual_seed(0)
    proj, protos = torch.randn(3, 10, 8, generator=g), torch.randn(3, 4, 8, generator=g)
    radii, prior, lams = torch.zeros(3, 4), torch.zeros(10, 4), torch.zeros(3)
    z = torch.nn.functional.normalize(proj, dim=-1)
    expected = -torch.cdist(z, protos)
    torch.testing.assert_close(DecT._distance_scores(proj, protos, radii, prior, lams), expected, atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("solver", ["span", "full"])
def test_lambda_search_rows_are_independent_decoders_and_pick_judges_held_out_folds(solver):
    """The λ search trains every (λ, fold) decoder and each λ's final one as rows of one batch: each row must be
    the decoder a run of its own would give, and the pick must judge each row on its held-out fold only."""
    import torch

    from edgetune.methods.core.decoders import LambdaSearch
    from edgetune.methods.dect import DecT

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 10, generator=gen), torch.arange(3).repeat(8)
    prior = torch.randn(24, 3, generator=gen)
    search = LambdaSearch.build(y.numpy(), 3, [0.5, 2.0], 4, seed=0)
    assert search.k == 4 and search.n_cv == 8 and tuple(search.weights.shape) == (10, 24)
    held = 1.0 - search.weights[: search.n_cv]
    assert torch.equal(held.sum(0), torch.full((24,), 2.0))  # each example held out once per λ
    for row in held:  # stratified: each fold holds 2 examples of each class
        assert torch.equal(torch.bincount(y[row.bool()], minlength=3), torch.tensor([2, 2, 2]))
    assert [search.lam(r) for r in range(10)] == [0.5] * 4 + [2.0] * 4 + [0.5, 2.0]

    dect = DecT(None, epochs=6, proto_dim=4, solver=solver)
    snaps: dict = {6: None}
    losses = dect._train(x, y, prior, search.lams, search.weights, 3, snapshots=snaps)
    weights_of, protos, radii, _ = snaps[6]
    for r in (0, 5, 9):
        one: dict = {6: None}
        alone_losses = dect._train(x, y, prior, search.lams[r : r + 1], search.weights[r : r + 1], 3, snapshots=one)
        alone_of, alone_protos, alone_radii, _ = one[6]
        for batched, single in ((weights_of(r), alone_of(0)), (protos[r], alone_protos[0]),
                                (radii[r], alone_radii[0]), (losses[r], alone_losses[0])):
            torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)

    # held-out scores right for λ = 2.0's decoders and wrong for λ = 0.5's, except on examples they trained on
    right = torch.nn.functional.one_hot(y, 3).float() * 5
    scores = torch.stack([right if search.lam(r) == 2.0 else -right for r in range(search.n_cv)])
    scores[:4] += 10 * torch.nn.functional.one_hot(y, 3).float() * search.weights[:4, :, None]  # seen: no credit
    row, accuracy = search.pick(scores, y)
    assert row == search.n_cv + 1 and accuracy == {0.5: 0.0, 2.0: 1.0}
    assert LambdaSearch.build(y.numpy()[:4], 3, [1.0], 4, seed=0).k == 0  # one example of a class: no CV


def test_dect_chooses_its_training_length_by_cross_validation(backend):
    """``epochs`` as a list: the length is chosen with λ by the same cross-validation (snapshots of one run), and
    the kept decoder is the one a fit with that length and λ fixed gives."""
    from edgetune.methods.dect import DecT

    feats, y = synthetic(n_per_class=8, d=24, prior_quality=0.3, seed=1)
    many = fit(DecT(backend, epochs=[0, 4, 25], proto_dim=8), feats, y)
    assert many.epochs_ in (0, 4, 25) and len(many.losses_) == many.epochs_
    fixed = fit(DecT(backend, epochs=many.epochs_, lam=many.lam_, proto_dim=8), feats, y)
    np.testing.assert_allclose(many.W_, fixed.W_, atol=1e-5)
    np.testing.assert_allclose(many.protos_, fixed.protos_, atol=1e-5)
    # the chosen length's best CV accuracy is the best of every length's, each fitted on its own
    alone = {e: max(fit(DecT(backend, epochs=e, proto_dim=8), feats, y).cv_accuracy_.values()) for e in (0, 4, 25)}
    assert max(many.cv_accuracy_.values()) == pytest.approx(max(alone.values()))
    assert fit(DecT(backend, epochs=30, proto_dim=8), feats, y).epochs_ == 30
    for bad in ([], [3, -1], "10"):
        with pytest.raises(EdgetuneError, match="epochs must be"):
            fit(DecT(backend, epochs=bad), feats, y)
