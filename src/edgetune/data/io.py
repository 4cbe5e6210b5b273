"""Reading labelled examples from JSONL, CSV, TSV files or a Hugging Face ``datasets`` object.

Column names are configurable (``text``, ``text_b``, ``label`` by default). Every problem names the
file and the line: a malformed row, a missing column, an empty text or a label outside the task's set.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .example import Example

_STANDARD = ("text", "text_b", "label")


def _check_row(
    row: Mapping[str, Any], where: str, labels: Sequence[str] | None, text: str, text_b: str | None, label: str,
    require_label: bool, label_sep: str | None = None,
) -> Example:
    if text not in row:
        raise DataError(f"{where}: no column {text!r} (columns: {', '.join(map(str, row))}); set the text column")
    value = row[text]
    if value is None or not str(value).strip():
        raise DataError(f"{where}: empty text in column {text!r}")
    second = None
    if text_b is not None:
        if text_b not in row:
            raise DataError(f"{where}: no column {text_b!r} (columns: {', '.join(map(str, row))})")
        second = "" if row[text_b] is None else str(row[text_b])
        if not second.strip():
            raise DataError(f"{where}: empty text in column {text_b!r}")
    if label not in row and label == "label" and isinstance(row.get("labels"), list):
        label = "labels"  # a multi-label file's own column name
    lab = row.get(label)
    many = _label_list(lab, label_sep, where, label, labels, require_label)
    if many is not None:
        lab_s = None
    elif lab is None or str(lab) == "":
        if require_label:
            raise DataError(f"{where}: no label in column {label!r}")
        lab_s = None
    else:
        lab_s = str(lab)
        if labels is not None and lab_s not in labels:
            raise DataError(f"{where}: unknown label {lab_s!r}; the task's labels are {', '.join(labels)}")
    skip = {text, label} | ({text_b} if text_b else set())
    extra = {k: v for k, v in row.items() if k not in skip and k not in _STANDARD and k not in ("id", "labels")}
    return Example(str(value).strip(), None if second is None else second.strip(), lab_s,
                   str(row.get("id", "")) or None, extra, many)


def _label_list(value: Any, sep: str | None, where: str, column: str, labels: Sequence[str] | None,
                require_label: bool) -> tuple[str, ...] | None:
    """A row's label list: a JSON list, or a string cut at ``sep`` (``--label-sep``); ``None`` for a single label.
    A label outside ``labels`` is a one-line :class:`DataError` naming the row; an empty list is kept (whether a
    task allows one is the task's to say)."""
    if isinstance(value, list | tuple):
        names = [str(v).strip() for v in value]
    elif sep is not None and isinstance(value, str) and (value.strip() or require_label):
        names = [part.strip() for part in value.split(sep)] if value.strip() else []
    elif sep is not None and (value is None or value == "") and require_label:
        raise DataError(f"{where}: no label in column {column!r}")
    else:
        return None
    if any(not name for name in names):
        raise DataError(f"{where}: an empty label name in column {column!r} ({value!r})")
    if labels is not None:
        unknown = [name for name in names if name not in labels]
        if unknown:
            raise DataError(f"{where}: unknown label {unknown[0]!r}; the task's labels are {', '.join(labels)}")
    return tuple(dict.fromkeys(names))


def _text(path: Path) -> str:
    """The file's text (``.xz``/``.gz`` decompressed), or one clear error naming the file and line of a byte
    that is not UTF-8."""
    raw = path.read_bytes()
    kind = path.suffix.lower()
    try:
        if kind == ".xz":
            raw = lzma.decompress(raw)
        elif kind == ".gz":
            raw = gzip.decompress(raw)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise DataError(f"{path}: damaged {kind[1:]} file ({exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the file as UTF-8 "
                        "(e.g. iconv -f latin1 -t utf-8)") from None


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    name = path.name.lower()
    suffix = Path(name.removesuffix(".xz").removesuffix(".gz")).suffix
    if suffix in (".jsonl", ".json"):
        for n, line in enumerate(_text(path).split("\n"), 1):  # only \n ends a record (not U+2028)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: malformed JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line")
            yield n, obj
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(_text(path), newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file (expected a header row)")
        for row in reader:
            if None in row:
                raise DataError(f"{path}:{reader.line_num}: more fields than the header has")
            yield reader.line_num, row
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .csv or .tsv, optionally .xz/.gz)")


def read_examples(
    path: str | os.PathLike,
    labels: Sequence[str] | None = None,
    text: str = "text",
    text_b: str | None = None,
    label: str = "label",
    require_label: bool = True,
    split: str | None = None,
    label_sep: str | None = None,
) -> list[Example]:
    """Read examples from a file (.jsonl, .csv, .tsv; optionally .xz/.gz) or a Hugging Face ``datasets``
    folder written by ``save_to_disk`` (a ``DatasetDict`` folder: its ``split``). ``text_b`` defaults to
    ``"text_b"`` when the data has that column. Multi-label rows: a JSON list in the label column (or in
    ``labels`` when the file has no ``label``), or, with ``label_sep``, a column of names joined by it
    (``"billing|urgent"``)."""
    path = Path(path)
    if path.is_dir():
        return examples_from_hf(load_hf_folder(path, split), labels, text, text_b, label, source=str(path),
                                label_sep=label_sep)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    out: list[Example] = []
    for n, row in _rows(path):
        col_b = text_b if text_b is not None else ("text_b" if row.get("text_b") is not None else None)
        ex = _check_row(row, f"{path}:{n}", labels, text, col_b, label, require_label, label_sep)
        out.append(Example(ex.text, ex.text_b, ex.label, ex.id or str(len(out)), ex.extra, ex.labels))
    if not out:
        raise DataError(f"{path}: no examples")
    return out


def load_hf_folder(path: Path, split: str | None = None) -> Any:
    """A ``datasets.Dataset`` saved with ``save_to_disk`` (a ``DatasetDict``: its ``split``)."""
    if not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        raise DataError(f"{str(path)!r} is a folder but not a Hugging Face dataset saved with save_to_disk; "
                        "give a .jsonl, .csv or .tsv file")
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError:
        raise DataError(f"{str(path)!r} is a Hugging Face dataset folder: pip install datasets to read it") from None
    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        if split is None or split not in data:
            raise DataError(f"{str(path)!r} holds splits {', '.join(data)}; name one (here: no {split!r} split)")
        data = data[split]
    return data


def is_hf_dataset(obj: Any) -> bool:
    """A ``datasets.Dataset`` or ``DatasetDict`` (checked without importing ``datasets``)."""
    return type(obj).__module__.startswith("datasets.")


def examples_from_hf(
    dataset: Any,
    labels: Sequence[str] | None = None,
    text: str = "text",
    text_b: str | None = None,
    label: str = "label",
    source: str = "dataset",
    require_label: bool = True,
    label_sep: str | None = None,
) -> list[Example]:
    """Examples from a ``datasets.Dataset`` (or any sequence of row dicts). Integer labels of a
    ``ClassLabel`` column are mapped to their names; ``text_b`` defaults to ``"text_b"`` when present."""
    if type(dataset).__name__ in ("DatasetDict", "IterableDatasetDict"):
        raise DataError(f"got a DatasetDict with splits {', '.join(dataset)}; pass one split, e.g. ds['train']")
    columns = getattr(dataset, "column_names", None) or []
    if text_b is None and "text_b" in columns:
        text_b = "text_b"
    names = None
    features = getattr(dataset, "features", None)
    if features is not None and label in features and hasattr(features[label], "names"):
        names = list(features[label].names)
    out = []
    for i, row in enumerate(dataset):
        row = dict(row)
        if names is not None and isinstance(row.get(label), int):
            row[label] = names[row[label]]
        elif isinstance(row.get(label), list):  # a Sequence(ClassLabel) column: ids -> names
            inner = getattr(getattr(features, "get", lambda k: None)(label), "feature", None)
            if hasattr(inner, "names"):
                row[label] = [inner.names[v] if isinstance(v, int) else v for v in row[label]]
        ex = _check_row(row, f"{source} row {i}", labels, text, text_b, label, require_label, label_sep)
        out.append(Example(ex.text, ex.text_b, ex.label, str(i), ex.extra, ex.labels))
    if not out:
        raise DataError(f"{source} is empty")
    return out
