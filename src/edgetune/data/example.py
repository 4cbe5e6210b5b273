"""The unit of data: one (optionally paired) text with an optional label name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import DataError


@dataclass(frozen=True)
class Example:
    """One input. ``label`` is a label *name* (``None`` for unlabelled input); ``extra`` holds any other
    field a template may name (WiC's ``word``). A multi-label example has ``labels`` instead: the tuple of its label
    names (possibly empty), and ``label`` ``None``."""

    text: str
    text_b: str | None = None
    label: str | None = None
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    labels: tuple[str, ...] | None = None

    def field(self, name: str) -> Any:
        if name == "text":
            return self.text
        if name == "text_b":
            return self.text_b
        if name in self.extra:
            return self.extra[name]
        raise KeyError(name)


@dataclass(frozen=True)
class Dataset(Sequence[Example]):
    """An ordered list of examples together with the label set they use.

    ``ids`` record where each example came from (its row in the source file), so a few-shot sample can
    be reported and re-drawn exactly.
    """

    examples: tuple[Example, ...]
    labels: tuple[str, ...]
    name: str = ""
    seed: int | None = None
    shots: int | None = None
    task: Any = field(default=None, compare=False)  # the Task it came from (carries template and words)
    #: labels a multi-label sample holds fewer than ``shots`` of (the pool had no more)
    short: tuple[str, ...] = ()
    #: ids of examples held out of the pool this dataset is (or was drawn from) for validation: nothing drawn for a
    #: method from the task's pool — a sample, a dev split — may use them (:func:`~edgetune.data.sampling.held_out`)
    reserved: frozenset[str] = field(default=frozenset(), compare=False)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):  # type: ignore[override]
        return self.examples[i]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    @property
    def ids(self) -> list[str | None]:
        return [e.id for e in self.examples]

    @property
    def multi_label(self) -> bool:
        """True when the examples carry label lists (:attr:`Example.labels`), several labels per text."""
        return any(e.labels is not None for e in self.examples)

    @property
    def Y(self) -> list[tuple[str, ...]]:
        """Each example's label names (a one-label tuple for a single-label example)."""
        missing = [i for i, e in enumerate(self.examples) if e.labels is None and e.label is None]
        if missing:
            raise DataError(f"{self.name or 'dataset'}: example {missing[0]} has no label")
        return [e.labels if e.labels is not None else (e.label,) for e in self.examples]  # type: ignore[misc]

    def indicator(self) -> Any:
        """The (n, C) 0/1 matrix of :attr:`Y` over :attr:`labels` (scikit-learn's multi-label indicator)."""
        import numpy as np

        index = {name: i for i, name in enumerate(self.labels)}
        out = np.zeros((len(self.examples), len(self.labels)), dtype=np.int64)
        for row, names in enumerate(self.Y):
            for name in names:
                if name not in index:
                    raise DataError(f"{self.name or 'dataset'}: example {self.examples[row].id} has label {name!r} "
                                    f"outside {list(self.labels)}")
                out[row, index[name]] = 1
        return out

    @property
    def y(self) -> list[str]:
        if self.multi_label:
            raise DataError(f"{self.name or 'dataset'} is multi-label (several labels per text): read .Y")
        missing = [i for i, e in enumerate(self.examples) if e.label is None]
        if missing:
            raise DataError(f"{self.name or 'dataset'}: example {missing[0]} has no label")
        return [e.label for e in self.examples]  # type: ignore[misc]

    def label_ids(self) -> list[int]:
        index = {name: i for i, name in enumerate(self.labels)}
        return [index[label] for label in self.y]

    def excluding(self, *others: Iterable[Example]) -> Dataset:
        """This dataset without the examples (matched by id) of ``others``: the part of a train pool that a
        few-shot sample and its dev split did not use, for held-out checks that never touch the test set."""
        used = {e.id for other in others for e in other}
        return replace(self, examples=tuple(e for e in self.examples if e.id not in used), seed=None, shots=None)


#: the columns a table's texts are read from (a pandas DataFrame, a 2-D array of one or two columns)
TEXT_COLUMN, TEXT_B_COLUMN = "text", "text_b"


def as_examples(X: Iterable[Any], y: Sequence[Any] | None = None, *, text_col: str | None = None,
                text_b_col: str | None = None) -> list[Example]:
    """Accept what a scikit-learn user passes: a list, numpy array or pandas Series of strings; a pandas
    DataFrame (its ``text_col`` column, and ``text_b_col`` for pairs; by default ``text`` and ``text_b``, or its
    only column); a 2-D array of one or two
    text columns; a Hugging Face ``datasets.Dataset``; :class:`Example` objects, ``(text, text_b)`` pairs or
    dicts. Labels ``y`` may be any values (strings, ints, a numpy array); they become label names with ``str``."""
    from .io import examples_from_hf, is_hf_dataset

    if is_hf_dataset(X):  # a Hugging Face datasets.Dataset (ClassLabel ids -> names)
        if y is not None:
            raise DataError("a datasets.Dataset carries its labels (its 'label' column); do not pass y as well")
        return examples_from_hf(X, require_label=False)
    if y is not None and not isinstance(y, Sequence):
        y = list(y.tolist() if hasattr(y, "tolist") else y)  # a numpy array or pandas Series of labels
    out: list[Example] = []
    items = _rows(X, text_col, text_b_col)
    if y is not None and len(y) != len(items):
        raise DataError(f"got {len(items)} inputs but {len(y)} labels")
    for i, item in enumerate(items):
        many = None if y is None or not is_label_list(y[i]) else tuple(str(v) for v in y[i])
        label = None if y is None or many is not None else str(y[i])
        if isinstance(item, Example):
            ex = (item if label is None and many is None
                  else Example(item.text, item.text_b, label, item.id, item.extra, many))
        elif isinstance(item, str):
            ex = Example(item, None, label, str(i))
        elif isinstance(item, tuple | list) and len(item) == 2:
            ex = Example(str(item[0]), str(item[1]), label, str(i))
        elif isinstance(item, dict):
            rest = {k: v for k, v in item.items() if k not in ("text", "text_b", "label", "labels", "id")}
            own = item.get("labels", item.get("label"))
            if many is None and y is None and is_label_list(own):
                many = tuple(str(v) for v in own)
            ex = Example(
                str(item.get("text", "")),
                item.get("text_b"),
                None if many is not None else label if label is not None else item.get("label"),
                str(item.get("id", i)),
                rest,
            )
        else:
            raise DataError(f"input {i} is a {type(item).__name__}; expected a string, a (text, text_b) pair or a dict")
        if many is not None and ex.labels != many:
            ex = Example(ex.text, ex.text_b, None, ex.id, ex.extra, many)
        out.append(ex)
    return out


def is_label_list(value: Any) -> bool:
    """Whether one sample's target is a list of labels (a list, tuple, set or 1-D array: multi-label), not a label."""
    if isinstance(value, str | bytes):
        return False
    return isinstance(value, list | tuple | set | frozenset) or getattr(value, "ndim", 0) == 1


def _rows(X: Any, text_col: str | None = None, text_b_col: str | None = None) -> list[Any]:
    """The inputs of ``X`` one per sample — never a table's column names (iterating a DataFrame gives those)."""
    columns = getattr(X, "columns", None)
    if columns is not None and hasattr(X, "iloc"):  # a pandas DataFrame
        names = [str(c) for c in columns]
        for given in (text_col, text_b_col):
            if given is not None and given not in names:
                raise DataError(f"the DataFrame has no column {given!r}; its columns are {names[:8]}")
        if text_col is not None or TEXT_COLUMN in names:
            text = X[text_col or TEXT_COLUMN].tolist()
            second = text_b_col or (TEXT_B_COLUMN if TEXT_B_COLUMN in names and text_col is None else None)
            pair = X[second].tolist() if second is not None else None
        elif len(names) == 1:
            text, pair = X.iloc[:, 0].tolist(), None
        else:
            raise DataError(f"a DataFrame's texts are read from its {TEXT_COLUMN!r} column (and {TEXT_B_COLUMN!r} for "
                            f"pairs) or from its only column; this one has {names[:8]}: pass text_col= (and "
                            "text_b_col=) to the method")
        return list(text) if pair is None else [(a, b) for a, b in zip(text, pair, strict=True)]
    shape = getattr(X, "shape", None)
    if shape is not None and hasattr(X, "tolist"):  # a numpy array (or a pandas Series)
        if len(shape) == 2 and shape[1] in (1, 2):
            return [row[0] if len(row) == 1 else tuple(row) for row in X.tolist()]
        if len(shape) != 1:
            raise DataError(f"an array of inputs has one text per row (shape (n,), (n, 1), or (n, 2) for pairs), not "
                            f"shape {tuple(shape)}")
        return X.tolist()
    if isinstance(X, str | bytes):
        raise DataError("the inputs are one string; pass a list of texts (one per sample)")
    return list(X)
