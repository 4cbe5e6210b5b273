import json

import pytest

from edgetune.data import TASKS, Example, Task, load_task, read_examples, sample_k_per_class, subsample
from edgetune.data.example import Dataset, as_examples
from edgetune.data.io import examples_from_hf
from edgetune.data.tasks import custom_task, parse_label_words, readable_label, task_from_file
from edgetune.errors import DataError


def test_every_registry_task_is_consistent():
    needed = {"sst2", "imdb", "yelp", "agnews", "dbpedia", "yahoo", "trec", "rte", "cb", "snli", "mnli", "boolq",
              "wic", "qnli", "mrpc", "cola"}
    assert needed <= set(TASKS)
    for task in TASKS.values():
        assert len(task.words) == len(task.labels) == len(set(task.words))
        assert task.template.rstrip().endswith("{mask}"), task.name  # causal LMs need the word last


def test_sampling_is_k_per_class_deterministic_and_seed_dependent(toy_task):
    pool = toy_task.load("train")
    a, b, c = (sample_k_per_class(pool, 3, s) for s in (0, 0, 1))
    assert [e.label for e in a].count("positive") == 3 and [e.label for e in a].count("negative") == 3
    assert a.ids == b.ids
    assert a.ids != c.ids
    assert a.seed == 0 and a.shots == 3 and a.task is toy_task


def test_excluding_drops_the_used_examples_by_id(toy_task):
    pool = toy_task.load("train")
    a, b = sample_k_per_class(pool, 2, 0), sample_k_per_class(pool, 3, 1)
    rest = pool.excluding(a, b)
    assert len(rest) == len(pool) - len(set(a.ids) | set(b.ids)) > 0
    assert not set(rest.ids) & (set(a.ids) | set(b.ids))
    assert rest.labels == pool.labels and rest.task is toy_task and rest.shots is None
    assert pool.excluding().ids == pool.ids


def test_sampling_too_many_shots_names_the_label(toy_task):
    with pytest.raises(DataError, match="only 10 examples"):
        toy_task.sample(11, 0)


def test_subsample_is_stable(toy_task):
    full = toy_task.load("train")
    assert subsample(full, 5, 0).ids == subsample(full, 5, 0).ids
    assert len(toy_task.load("train", limit=5)) == 5


def test_task_data_is_installed_with_edgetune(monkeypatch):
    """With no data dir given, every registered task reads its train and test splits from the package."""
    from edgetune.data.tasks import TASKS
    from edgetune.paths import PACKAGED_DATA

    monkeypatch.delenv("EDGETUNE_DATA_DIR", raising=False)
    for name, task in TASKS.items():
        assert task.split_path("test").parent == PACKAGED_DATA / name
        assert task.split_path("train" if name != "yelp" else "test").name.endswith(".jsonl.xz")
    sst2 = load_task("sst2")
    assert len(sst2.load("test")) == 872 and set(sst2.load("test").labels) == {"negative", "positive"}
    assert len(sst2.sample(4, 0)) == 8
    assert "Licences" in (PACKAGED_DATA / "SOURCES.md").read_text()
    with pytest.raises(DataError, match="does not exist"):
        load_task("sst2", "/nonexistent/dir").load("test")


def test_installed_data_is_the_shared_copy(monkeypatch):
    """Byte for byte the shared JSONL copies (where they are here), so samples are the same either way;
    a capped train pool is an ordered subset of its source."""
    import lzma

    from conftest import shared_data_dir

    from edgetune.paths import PACKAGED_DATA

    shared = shared_data_dir()
    if shared is None:
        pytest.skip("the shared task data is not available")
    for packed in sorted(PACKAGED_DATA.glob("*/*.jsonl.xz")):
        data = lzma.decompress(packed.read_bytes())
        source = (shared / packed.parent.name / packed.name.removesuffix(".xz")).read_bytes()
        if data != source:
            assert packed.name == "train.jsonl.xz", packed  # only train pools may be capped
            lines, pool = data.splitlines(), source.splitlines()
            assert len(lines) < len(pool) and len(set(lines) - set(pool)) == 0, packed


def test_compressed_and_non_utf8_files(tmp_path):
    import gzip
    import lzma

    rows = '{"text": "ok", "label": "a"}\n{"text": "fine \u2028 here", "label": "b"}\n'
    (tmp_path / "x.jsonl.xz").write_bytes(lzma.compress(rows.encode()))
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(b"text,label\nok,a\n"))
    assert [e.label for e in read_examples(tmp_path / "x.jsonl.xz")] == ["a", "b"]
    assert read_examples(tmp_path / "x.csv.gz")[0].text == "ok"
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(DataError, match=r"latin.csv:3: byte 0xe9 is not UTF-8"):
        read_examples(bad)
    (tmp_path / "torn.jsonl.xz").write_bytes(lzma.compress(rows.encode())[:20])
    with pytest.raises(DataError, match="damaged xz file"):
        read_examples(tmp_path / "torn.jsonl.xz")


def test_missing_split_lists_available(toy_task):
    with pytest.raises(DataError, match="available splits: test, train"):
        toy_task.load("dev")


def test_malformed_jsonl_names_the_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "ok", "label": "a"}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: malformed JSON"):
        read_examples(f)


@pytest.mark.parametrize(
    ("row", "message"),
    [({"text": "  ", "label": "a"}, "empty text"), ({"text": "t", "label": "zzz"}, "unknown label 'zzz'"),
     ({"body": "t", "label": "a"}, "no column 'text'"), ({"text": "t"}, "no label")],
)
def test_bad_rows(tmp_path, row, message):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message):
        read_examples(f, labels=["a", "b"])


def test_csv_and_tsv_with_custom_columns(tmp_path):
    (tmp_path / "d.csv").write_text('review,stars\n"great, really",pos\nawful,neg\n')
    (tmp_path / "d.tsv").write_text("review\tstars\ngreat\tpos\n")
    ex = read_examples(tmp_path / "d.csv", labels=["pos", "neg"], text="review", label="stars")
    assert [(e.text, e.label) for e in ex] == [("great, really", "pos"), ("awful", "neg")]
    assert read_examples(tmp_path / "d.tsv", text="review", label="stars")[0].label == "pos"
    with pytest.raises(DataError, match="unsupported file type"):
        read_examples(tmp_path / "d.csv.txt" if (tmp_path / "d.csv.txt").touch() is None else None)


def test_csv_extra_fields_are_an_error(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\na,b,c\n")
    with pytest.raises(DataError, match="more fields"):
        read_examples(tmp_path / "d.csv")


def test_hf_dataset_with_classlabel():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0]},
                                    features=datasets.Features({"sentence": datasets.Value("string"),
                                                                "label": datasets.ClassLabel(names=["neg", "pos"])}))
    ex = examples_from_hf(ds, labels=["neg", "pos"], text="sentence")
    assert [(e.text, e.label) for e in ex] == [("good", "pos"), ("bad", "neg")]


def test_task_file_and_overrides(tmp_path, toy_dir):
    (tmp_path / "task.yaml").write_text(
        "name: mine\ntemplate: '{text} Overall: {mask}'\nlabel_words: {negative: bad, positive: good}\n"
        f"files: {{train: {toy_dir}/toy/train.jsonl, test: {toy_dir}/toy/test.jsonl}}\n")
    task = load_task(tmp_path / "task.yaml")
    assert task.name == "mine" and task.words == ["bad", "good"]
    assert len(task.sample(2, 0)) == 4
    t2 = load_task("sst2", template="{text} Verdict: {mask}", label_words="negative:poor,positive:fine")
    assert t2.template == "{text} Verdict: {mask}" and t2.words == ["poor", "fine"]
    (tmp_path / "bad.yaml").write_text("template: '{text} {mask}'\n")
    with pytest.raises(DataError, match="needs 'labels' or 'label_words'"):
        task_from_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("template: '{text} {mask}'\nlabels: [neg, pos]\nlabel_words: [bad, good]\n")
    assert task_from_file(tmp_path / "list.yaml").label_words == {"neg": "bad", "pos": "good"}
    (tmp_path / "list.yaml").write_text("template: '{text} {mask}'\nlabels: [neg, pos]\nlabel_words: [bad]\n")
    with pytest.raises(DataError, match="same length"):
        task_from_file(tmp_path / "list.yaml")
    (tmp_path / "more.yaml").write_text("template: '{text} {mask}'\nlabel_words: {neg: bad, pos: good}\n"
                                        "more_label_words: [{neg: awful, pos: great}]\n")
    assert task_from_file(tmp_path / "more.yaml").more_words == [["awful", "great"]]
    (tmp_path / "more.yaml").write_text("template: '{text} {mask}'\nlabel_words: {neg: bad, pos: good}\n"
                                        "more_label_words: [{neg: awful}]\n")
    with pytest.raises(DataError, match=r"more_label_words\[0\]: no label word for label\(s\) \['pos'\]"):
        task_from_file(tmp_path / "more.yaml")
    for bad, message in (("{neg: awful, pos: awful}", "share a label word"), ("{neg: awful, pos: ' '}", "is empty"),
                         ("{neg: a, pos: b, mid: c}", r"unknown label\(s\) \['mid'\]")):
        (tmp_path / "more.yaml").write_text("template: '{text} {mask}'\nlabel_words: {neg: bad, pos: good}\n"
                                            f"more_label_words: [{bad}]\n")
        with pytest.raises(DataError, match=message):  # the same rules as the main words', the same messages
            task_from_file(tmp_path / "more.yaml")
    with pytest.raises(DataError, match="is empty"):
        Task("t", ("neg", "pos"), "{text} {mask}", {"neg": "bad", "pos": " "})
    assert load_task("sst2").more_words and not load_task("sst2", label_words="negative:poor,positive:fine").more_words


@pytest.mark.parametrize("name,words", [
    ("transfer_money", "transfer money"), ("cardArrival", "card arrival"), ("card-arrival", "card arrival"),
    ("EducationalInstitution", "educational institution"), ("HTTPError", "HTTP error"),
    ("Sci/Tech", "Sci/Tech"), ("ABBR", "ABBR"), ("Society & Culture", "Society & Culture"), ("great", "great")])
def test_readable_label(name, words):
    assert readable_label(name) == words


def test_labels_without_words_read_their_names(tmp_path):
    rows = [{"text": f"t{i}", "label": lab} for i, lab in enumerate(["transfer_money", "cardArrival"] * 2)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = custom_task("intents", "{text} Intent: {mask}", None, {"train": str(train), "test": str(train)})
    assert task.labels == ("cardArrival", "transfer_money")  # read from the train file, sorted
    assert task.words == ["card arrival", "transfer money"] and task.words_derived
    assert "transfer_money → 'transfer money'" in task.derived_words_note()
    (tmp_path / "t.yaml").write_text("template: '{text} Intent: {mask}'\nlabels: [pin_blocked, topUp]\n")
    assert task_from_file(tmp_path / "t.yaml").words == ["pin blocked", "top up"]
    assert not load_task("sst2").words_derived and load_task("sst2").derived_words_note() == ""
    with pytest.raises(DataError, match="listed more than once"):
        Task("x", ("a", "b", "a"), "{text} {mask}", {})
    with pytest.raises(DataError, match="has no labels"):
        Task("x", (), "{text} {mask}", {})


def test_parse_label_words_errors():
    assert parse_label_words("a:x, b:y") == {"a": "x", "b": "y"}
    with pytest.raises(DataError):
        parse_label_words("a=x")


def test_unknown_task_lists_known():
    with pytest.raises(DataError, match="known: sst2"):
        load_task("nope")


def test_as_examples_accepts_common_inputs():
    ex = as_examples(["a", ("p", "h"), {"text": "t", "word": "w"}, Example("e")], y=["x", "y", "z", "w"])
    assert [e.label for e in ex] == ["x", "y", "z", "w"]
    assert ex[1].text_b == "h" and ex[2].extra == {"word": "w"}
    with pytest.raises(DataError, match="2 labels"):
        as_examples(["a"], y=["x", "y"])
    with pytest.raises(DataError):
        _ = Dataset((Example("a"),), ("x",)).y
