"""Multi-label classification: data with a list of labels per text, per-label sampling, the methods that fit it,
its measures, and one clear refusal wherever it cannot go."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_methods import FakeBackend

from edgetune.backends import Features
from edgetune.data import Task
from edgetune.data.example import Dataset, Example, as_examples
from edgetune.data.io import read_examples
from edgetune.data.sampling import draw, sample_k_per_label
from edgetune.data.tasks import TASKS, custom_task, load_task
from edgetune.errors import DataError, EdgetuneError
from edgetune.methods import METHODS
from edgetune.methods.configs import multi_label_methods
from edgetune.methods.core.config import ParamError
from edgetune.methods.core.multilabel import choose_threshold, decide, label_folds
from edgetune.metrics import check_metric, multi_label_scores

LABELS4 = ("billing", "urgent", "bug", "praise")


def synthetic_multi(n: int = 120, d: int = 32, prior_quality: float = 0.0, seed: int = 0):
    """Texts carrying 1-2 of 4 labels; the hidden state is the sum of its labels' centres plus noise, the
    label-word scores carry the labels with a given strength (0: noise)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(4, d)) * 3
    Y = np.zeros((n, 4), dtype=np.int64)
    first = np.arange(n) % 4
    Y[np.arange(n), first] = 1
    second = rng.random(n) < 0.4
    Y[np.flatnonzero(second), (first[second] + rng.integers(1, 4, second.sum())) % 4] = 1
    hidden = Y @ centres + rng.normal(size=(n, d))
    scores = rng.normal(size=(n, 4)) + prior_quality * Y * 5
    return Features(scores.astype(np.float32), hidden.astype(np.float32)), Y


def fit_multi(method, feats, Y, allow_empty=False):
    cf = Features(np.zeros((2, 4), np.float32), np.zeros((2, feats.hidden.shape[1]), np.float32))
    return method.fit_prepared(feats, Y, cf, labels=LABELS4, template="{text} {mask}", words=list("abcd"),
                               allow_empty=allow_empty)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- data ---------------------------------------------------------------------------------------------------------
def test_jsonl_label_lists_and_csv_with_a_separator_read_as_multi_label(tmp_path):
    rows = write_rows(tmp_path / "t.jsonl", [{"text": "refund now", "labels": ["billing", "urgent"]},
                                             {"text": "love it", "labels": ["praise"]}])
    got = read_examples(rows, labels=LABELS4)
    assert [e.labels for e in got] == [("billing", "urgent"), ("praise",)] and got[0].label is None
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\nrefund now,billing|urgent\nlove it,praise\n", encoding="utf-8")
    assert [e.labels for e in read_examples(csv, labels=LABELS4, label_sep="|")] == [("billing", "urgent"), ("praise",)]
    with pytest.raises(DataError, match=r"t.csv:2: unknown label 'refund'"):
        csv.write_text("text,label\nrefund now,refund|urgent\n", encoding="utf-8")
        read_examples(csv, labels=LABELS4, label_sep="|")


def test_a_task_refuses_an_empty_label_list_unless_it_allows_one(tmp_path):
    (tmp_path / "tix").mkdir()
    write_rows(tmp_path / "tix/train.jsonl", [{"text": "refund", "labels": ["billing"]}, {"text": "hi", "labels": []}])
    task = Task("tix", LABELS4, "{text} Topic: {mask}", {}, data_dir=str(tmp_path), multi_label=True)
    with pytest.raises(DataError, match="empty label list; task 'tix' needs at least one label"):
        task.load("train")
    loose = Task("tix", LABELS4, "{text} Topic: {mask}", {}, data_dir=str(tmp_path), multi_label=True,
                 allow_empty=True)
    assert loose.load("train").Y == [("billing",), ()]


def test_bring_your_own_csv_with_label_sep_reads_labels_from_every_list(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("text,label\nrefund now,billing|urgent\nlove it,praise\ncrash,bug\n",
                                              encoding="utf-8")
    task = custom_task("tix", "{text} Topic: {mask}", None, {"train": str(tmp_path / "train.csv"),
                                                             "test": str(tmp_path / "test.csv")}, label_sep="|")
    assert task.multi_label and task.labels == ("billing", "bug", "praise", "urgent")
    ds = task.load("test")
    assert ds.multi_label and ds.indicator().sum() == 4
    with pytest.raises(DataError, match="multi-label"):
        ds.y  # noqa: B018 - a single label per text does not exist here


def test_goemotions_ships_as_a_multi_label_registry_task():
    task = TASKS["goemotions"]
    assert task.multi_label and len(task.labels) == 28 and task.labels[-1] == "neutral"
    pool = load_task("goemotions").load("train")  # the packaged copy unless EDGETUNE_DATA_DIR points elsewhere
    assert len(pool) == 5426 and pool.multi_label
    counts = pool.indicator().sum(0)
    assert counts[task.labels.index("neutral")] == 1766 and counts[task.labels.index("grief")] == 13


def test_per_label_sampling_reaches_k_for_every_label_rarest_first_and_reports_short_labels():
    pool = load_task("goemotions").load("train")
    sample = sample_k_per_label(pool, 8, seed=3)
    counts = sample.indicator().sum(0)
    assert counts.min() >= 8
    assert len(sample) < 8 * 28  # an example drawn for one label counts for the others it carries
    assert [e.id for e in sample] == [e.id for e in sample_k_per_label(pool, 8, seed=3)]  # seeded
    assert [e.id for e in sample] != [e.id for e in sample_k_per_label(pool, 8, seed=4)]
    assert draw(pool, 8, 3).ids == sample.ids  # a multi-label pool is drawn per label
    big = sample_k_per_label(pool, 16, seed=0)
    assert big.short == ("grief", "pride")  # 13 and 15 in the pool: all of them, and named
    got = big.indicator().sum(0)
    assert got[TASKS["goemotions"].labels.index("grief")] == 13 and np.delete(got, [16, 21]).min() >= 16
    with pytest.raises(DataError, match="drawn per label"):
        draw(pool, 64, 0, how="natural")


def test_as_examples_takes_label_lists():
    got = as_examples(["a", "b"], [["x", "y"], ("z",)])
    assert [e.labels for e in got] == [("x", "y"), ("z",)]
    assert Dataset(tuple(got), ("x", "y", "z")).multi_label
    assert not Dataset((Example("a", None, "x"),), ("x", "y")).multi_label


# -- measures and decisions --------------------------------------------------------------------------------------
def test_multi_label_measures_are_scikit_learns():
    from sklearn.metrics import accuracy_score, f1_score

    Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    P = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 1, 0]])
    got = multi_label_scores(Y, P)
    assert got["micro_f1"] == pytest.approx(f1_score(Y, P, average="micro"))
    assert got["macro_f1"] == pytest.approx(f1_score(Y, P, average="macro"))
    assert got["samples_f1"] == pytest.approx(f1_score(Y, P, average="samples"))
    assert got["subset_accuracy"] == pytest.approx(accuracy_score(Y, P)) == 0.25
    assert check_metric("micro_f1") == "micro_f1"


def test_decisions_give_every_text_a_label_unless_empty_lists_are_allowed():
    P = np.array([[0.1, 0.2, 0.3], [0.9, 0.6, 0.1]])
    assert decide(P, [0.5] * 3, allow_empty=True).tolist() == [[False, False, False], [True, True, False]]
    assert decide(P, [0.5] * 3, allow_empty=False).tolist() == [[False, False, True], [True, True, False]]


def test_the_cv_threshold_separates_separable_probabilities_and_folds_spread_every_label():
    rng = np.random.default_rng(0)
    Y = (rng.random((200, 5)) < 0.3).astype(int)
    P = np.where(Y == 1, rng.uniform(0.3, 0.4, Y.shape), rng.uniform(0.0, 0.25, Y.shape))
    t, f1 = choose_threshold(P, Y, allow_empty=True)
    assert 0.25 < t <= 0.3 and f1 == 1.0
    folds = label_folds(Y, 5, seed=0)
    for c in range(5):
        assert len(set(folds[Y[:, c] == 1].tolist())) == 5


# -- methods -----------------------------------------------------------------------------------------------------
LEARNERS = ["linear_probe", "centroid", "knn", "dect"]


@pytest.mark.parametrize("name", LEARNERS)
def test_each_multi_label_method_learns_labels_the_hidden_states_carry(name):
    train, Y = synthetic_multi(seed=0)
    test, Yt = synthetic_multi(n=200, seed=1)
    method = fit_multi(METHODS[name](FakeBackend()), train, Y)
    decided = method.decide_scores(method.decision_features(test))
    got = multi_label_scores(Yt, decided)
    assert got["micro_f1"] > 0.85, got
    assert 0 < method.threshold_ < 1 and method.thresholds_.shape == (4,)
    zero = fit_multi(METHODS["zeroshot"](FakeBackend()), train, Y)  # its scores are noise here
    assert multi_label_scores(Yt, zero.decide_scores(zero.decision_features(test)))["micro_f1"] < 0.6


def test_zero_shot_follows_informative_label_words_with_a_threshold_from_the_sample():
    train, Y = synthetic_multi(prior_quality=1.0, seed=0)
    test, Yt = synthetic_multi(n=200, prior_quality=1.0, seed=1)
    for name in ("zeroshot", "calibrated"):
        method = fit_multi(METHODS[name](FakeBackend()), train, Y)
        assert multi_label_scores(Yt, method.decide_scores(method.decision_features(test)))["micro_f1"] > 0.8
        content_free = 2 if name == "calibrated" else 0
        assert method.costs().queries == len(train) + content_free  # it read the training prompts for a threshold
        fixed = fit_multi(METHODS[name](FakeBackend(), threshold=0.3), train, Y)
        assert fixed.threshold_ == 0.3 and fixed.costs().queries == content_free


def test_dect_multi_label_trains_one_sigmoid_per_label_and_chooses_lambda_by_micro_f1():
    train, Y = synthetic_multi(seed=0)
    dect = fit_multi(METHODS["dect"](FakeBackend(), seed=0), train, Y)
    assert dect.losses_[-1] < dect.losses_[0]
    assert set(dect.cv_accuracy_) >= {dect.lam_} and all(0 <= v <= 1 for v in dect.cv_accuracy_.values())
    assert dect.oof_ is not None and dect.oof_.shape == Y.shape


def test_a_threshold_outside_zero_one_is_refused():
    for bad in (0, 1, 1.5, -0.1, "auto"):
        with pytest.raises(ParamError, match="threshold must be 'cv' or a probability strictly between 0 and 1"):
            METHODS["dect"].validate_params({"threshold": bad})


def test_single_label_methods_refuse_multi_label_data_in_one_line():
    train, Y = synthetic_multi(seed=0)
    for name in ("mpd", "batch_calibrated"):
        with pytest.raises(DataError, match=r"fits one label per text; .*Methods that fit multi-label data: "):
            fit_multi(METHODS[name](FakeBackend()), train, Y)
    assert {"dect", "linear_probe", "centroid", "knn", "zeroshot", "calibrated", "setfit"} <= set(multi_label_methods())
    assert "adept" not in multi_label_methods()


def test_estimator_surface_on_label_lists_and_on_an_indicator_matrix(make_backend):
    from sklearn.preprocessing import MultiLabelBinarizer

    texts = ["refund my money now", "the app crashes again", "great app , thanks", "charge me twice , fix it asap",
             "crash on start , urgent", "thanks for the quick fix", "billing error on my card", "it keeps crashing"] * 2
    labels = [["billing", "urgent"], ["bug"], ["praise"], ["billing", "urgent"], ["bug", "urgent"], ["praise"],
              ["billing"], ["bug"]] * 2
    words = {"billing": "money", "bug": "crash", "praise": "thanks", "urgent": "now"}
    method = METHODS["linear_probe"](make_backend(), template="{text} Topic: {mask}", label_words=words)
    method.fit(texts, labels)
    got = method.predict(texts[:3])
    assert isinstance(got, list) and all(isinstance(row, list) and row for row in got)
    proba = method.predict_proba(texts[:3])
    assert proba.shape == (3, 4) and not np.allclose(proba.sum(1), 1)
    assert method.score(texts, labels) >= 0.5  # subset accuracy on its own training texts
    mlb = MultiLabelBinarizer(classes=list(words))
    Y = mlb.fit_transform(labels)
    on_matrix = METHODS["linear_probe"](make_backend(), template="{text} Topic: {mask}", label_words=words)
    out = on_matrix.fit(texts, Y).predict(texts[:3])
    assert isinstance(out, np.ndarray) and out.shape == (3, 4)
    assert [set(r) for r in mlb.inverse_transform(out)] == [set(r) for r in got]


def test_a_saved_multi_label_method_predicts_the_same_after_load(tmp_path, make_backend):
    from edgetune.methods import load

    texts = ["refund my money", "app crashes", "great app", "refund , urgent", "crash , urgent", "thanks"] * 3
    labels = [["billing"], ["bug"], ["praise"], ["billing", "urgent"], ["bug", "urgent"], ["praise"]] * 3
    words = {"billing": "money", "bug": "crash", "praise": "thanks", "urgent": "now"}
    backend = make_backend()
    for name in ("dect", "knn", "centroid"):
        method = METHODS[name](backend, template="{text} Topic: {mask}", label_words=words).fit(texts, labels)
        method.save(tmp_path / name)
        again = load(tmp_path / name, model=backend)
        assert again.predict(texts) == method.predict(texts)
        np.testing.assert_allclose(again.predict_proba(texts), method.predict_proba(texts), rtol=1e-5)


def test_a_multi_label_bench_records_the_four_measures_and_refuses_a_single_label_method(tmp_path, make_backend):
    from edgetune.bench.config import BenchConfig, MethodEntry
    from edgetune.bench.records import read_results
    from edgetune.bench.runner import check_run, run_bench

    (tmp_path / "tix").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        chosen = sorted({LABELS4[i % 4], LABELS4[int(rng.integers(4))]})
        rows.append({"text": " ".join(chosen) + f" note {i}", "labels": chosen})
    write_rows(tmp_path / "tix/train.jsonl", rows)
    write_rows(tmp_path / "tix/test.jsonl", rows[::3])
    task = Task("tix", LABELS4, "{text} Topic: {mask}", {}, data_dir=str(tmp_path), multi_label=True)
    config = BenchConfig(name="ml", tasks=[task], methods=[MethodEntry("dect", "dect", {"epochs": 5}),
                                                           MethodEntry("knn", "knn", {})],
                         models=["tiny"], shots=[4], seeds=[0])
    out = run_bench(config, output=tmp_path / "out", progress=False, backends={"tiny": make_backend()})
    cells = [x for x in read_results(out) if x.get("type") == "cell"]
    assert len(cells) == 2
    for c in cells:
        assert c["multi_label"] and {"micro_f1", "macro_f1", "samples_f1", "subset_accuracy"} <= set(c)
        assert c["accuracy"] == c["subset_accuracy"] and len(c["per_label"]["tp"]) == 4
    from edgetune.bench.report import render

    report = Path(render(out, plots=False)).read_text(encoding="utf-8")
    assert "micro-F1 %" in report and "samples-F1 %" in report
    bad = BenchConfig(name="ml", tasks=[task], methods=[MethodEntry("adept", "adept", {})], models=["tiny"],
                      shots=[4], seeds=[0])
    with pytest.raises(EdgetuneError, match=r"task 'tix' is multi-label .*adept fit"):
        check_run(bad, tmp_path / "out2")


# -- the command line ----------------------------------------------------------------------------------------------
def cli(capsys, *argv):
    from edgetune.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_line_runs_a_multi_label_csv_and_refuses_what_cannot_run(capsys, tmp_path, tiny_model_dir):
    lines = ["text,tags"] + [f"{t} {i},{tag}" for i in range(6) for t, tag in
                             (("refund now", "billing|urgent"), ("app crash", "bug"), ("love it", "praise"),
                              ("crash fix asap", "bug|urgent"), ("charged twice", "billing"))]
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = ["--train", tmp_path / "train.csv", "--test", tmp_path / "test.csv", "--template", "{text} Topic: {mask}",
              "--label-col", "tags", "--model", tiny_model_dir, "--no-progress", "--shots", "3", "--seeds", "0"]
    code, out, err = cli(capsys, "run", "dect", *common, "--label-sep", "|", "--epochs", "5", "-o", tmp_path / "out")
    assert code == 0, err
    assert "micro-F1 %" in out and "linear probe" in out
    code, _, err = cli(capsys, "run", "adept", *common, "--label-sep", "|", "-o", tmp_path / "o2")
    assert code == 2 and "adept fits one label per text" in err and err.count("error:") == 1
    code, _, err = cli(capsys, "run", "dect", *common, "--label-sep", "|", "--threshold", "1.5", "-o", tmp_path / "o3")
    assert code == 2 and "threshold must be 'cv' or a probability strictly between 0 and 1" in err
    code, _, err = cli(capsys, "run", "dect", "--task", "goemotions", "--label-sep", "|", "--model", tiny_model_dir)
    assert code == 2 and "--label-sep reads your own CSV/TSV files" in err
    (tmp_path / "bad.csv").write_text("text,tags\nhello,billing|nope\n", encoding="utf-8")
    code, _, err = cli(capsys, "run", "dect", *common[:2], "--test", tmp_path / "bad.csv", *common[4:], "--label-sep",
                       "|", "--label-words", "billing:money,bug:crash,praise:thanks,urgent:now", "-o", tmp_path / "o4")
    assert code == 2 and "unknown label 'nope'" in err


TICKETS = ["refund my money now", "the app crashes again", "great app , thanks", "charged twice , fix it asap",
           "crash on start , urgent", "thanks for the quick fix", "billing error on my card", "it keeps crashing"] * 2
TAGS = [["billing", "urgent"], ["bug"], ["praise"], ["billing", "urgent"], ["bug", "urgent"], ["praise"],
        ["billing"], ["bug"]] * 2


def test_setfit_fits_label_lists_one_vs_rest_and_saves_its_thresholds(tmp_path):
    from edgetune.backends import load_backend
    from edgetune.methods import SetFit, load

    backend = load_backend("minilm-l6", cache=None, progress=False)
    m = SetFit(backend, max_steps=3, batch_size=4, progress=False).fit(TICKETS, TAGS)
    assert m.multi_label_ and m.coef_.shape == (4, 384) and m.threshold_ == 0.5  # SetFit's own decision
    got = m.predict(TICKETS[:4])
    assert all(isinstance(row, list) and row and set(row) <= {"billing", "bug", "praise", "urgent"} for row in got)
    proba = m.predict_proba(TICKETS[:4])
    assert proba.shape == (4, 4) and ((proba > 0) & (proba < 1)).all()
    path = m.save(tmp_path / "sf")
    again = load(path)
    assert again.predict(TICKETS[:4]) == got
    cv = SetFit(backend, max_steps=3, batch_size=4, progress=False, threshold="cv").fit(TICKETS, TAGS)
    assert 0 < cv.threshold_ < 1


def test_auto_chooses_among_multi_label_candidates_by_micro_f1(make_backend, tmp_path):
    from edgetune.methods import Auto, load

    words = {"billing": "money", "bug": "crash", "praise": "thanks", "urgent": "now"}
    backend = make_backend()
    auto = Auto(backend, template="{text} Topic: {mask}", label_words=words, cv_folds=2,
                candidates=["calibrated", "centroid", "linear_probe", "dect:epochs=3", "batch_calibrated"])
    auto.fit(TICKETS, TAGS)
    table = auto.cv_results_
    assert table["metric"] == "micro_f1" and auto.choice_ in {"calibrated", "centroid", "linear_probe", "dect"}
    assert "fits one label per text" in table["note"][table["candidate"].index("batch_calibrated")]
    got = auto.predict(TICKETS[:3])
    assert got == auto.chosen_.predict(TICKETS[:3]) and all(isinstance(r, list) for r in got)
    auto.save(tmp_path / "auto")
    assert load(tmp_path / "auto", model=backend).predict(TICKETS[:3]) == got



def test_predict_on_a_saved_multi_label_model_prints_each_texts_labels(capsys, tmp_path, tiny_model_dir):
    from edgetune.backends import load_backend

    words = {"billing": "money", "bug": "crash", "praise": "thanks", "urgent": "now"}
    backend = load_backend(str(tiny_model_dir), progress=False)
    method = METHODS["linear_probe"](backend, template="{text} Topic: {mask}", label_words=words,
                                     threshold=0.3).fit(TICKETS, TAGS)
    method.save(tmp_path / "lp")
    expected = method.predict(TICKETS[:3])
    code, out, err = cli(capsys, "predict", tmp_path / "lp", *TICKETS[:3], "--json", "--no-progress")
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["labels"] for r in rows] == expected and len(rows[0]["probabilities"]) == 4
    code, out, _ = cli(capsys, "predict", tmp_path / "lp", *TICKETS[:3], "--no-progress")
    assert out.strip().splitlines() == ["|".join(row) for row in expected]


def test_an_indicator_fit_keeps_answering_in_an_indicator_after_score_and_a_load(make_backend, tmp_path):
    from sklearn.preprocessing import MultiLabelBinarizer

    from edgetune.methods import Auto, load

    words = {"billing": "money", "bug": "crash", "praise": "thanks", "urgent": "now"}
    Y = MultiLabelBinarizer(classes=list(words)).fit_transform(TAGS)
    backend = make_backend()
    auto = Auto(backend, template="{text} Topic: {mask}", label_words=words, cv_folds=2,
                candidates=["centroid", "linear_probe"]).fit(TICKETS, Y)
    assert 0 <= auto.score(TICKETS, TAGS) <= 1  # scored on label lists: the fitted answer form is kept
    out = auto.predict(TICKETS[:3])
    assert isinstance(out, np.ndarray) and out.shape == (3, 4)
    auto.save(tmp_path / "auto")
    again = load(tmp_path / "auto", model=backend).predict(TICKETS[:3])
    assert isinstance(again, np.ndarray) and (again == out).all()
