"""Saving and loading methods: ``config.json`` + ``weights.safetensors`` (never pickle), checked before use."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from ...backends import Backend
from ...backends import saved_backend_options as backend_options
from ...data.templates import Template
from ...errors import EdgetuneError, IncompatibleError
from .config import ParamError

if TYPE_CHECKING:
    from .estimator import Method

FORMAT_VERSION = 1


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    raise TypeError(f"cannot save parameter value {value!r}")


def write_atomically(path: str | os.PathLike, config: dict[str, Any], tensors: dict[str, np.ndarray],
                     extra: Callable[[Path], None] | None = None) -> Path:
    """Write ``config.json`` and ``weights.safetensors`` (and whatever ``extra`` writes into the folder)
    into a temp folder, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not (target / "config.json").is_file() and any(target.iterdir()):
        raise EdgetuneError(f"{str(target)!r} exists and is not a saved edgetune model; choose another path")
    for name, value in tensors.items():  # a decoder that trained to NaN is never written (nor loaded, see read_saved)
        array = np.asarray(value)
        if array.dtype.kind == "f" and np.isnan(array).any():
            raise EdgetuneError(f"not saving {config.get('method', 'this model')!r} to {str(target)!r}: its "
                                f"{name!r} holds NaN (training diverged); retrain it, e.g. with a lower learning rate")
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        config = {**config, "tensors": sorted(tensors)}  # what loading must find in weights.safetensors
        (work / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        save_file({k: np.ascontiguousarray(v, dtype=np.int64 if np.asarray(v).dtype.kind in "iu" else np.float32)
                   for k, v in tensors.items()},
                  str(work / "weights.safetensors"))
        if extra is not None:
            extra(work)
        # the temp folder is private (0700) while written; the saved model gets the user's usual permissions
        # (so a service or another account can load it where the umask allows, as with any file they write)
        mask = os.umask(0)
        os.umask(mask)
        for item in [work, *work.rglob("*")]:
            item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def read_saved(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A saved folder's ``config.json`` and arrays, checked for what every method needs before any of it is used:
    a format this version reads (:data:`FORMAT_VERSION` or older), the entries of :meth:`Method._base_config`
    with their types, the listed arrays present and free of NaN. Every failure is one :class:`IncompatibleError`
    line naming the folder."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise EdgetuneError(f"{str(path)!r} is not a saved edgetune model (no config.json)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EdgetuneError(f"{cfg_path}: malformed JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise EdgetuneError(f"{cfg_path}: not UTF-8 text") from None
    check_saved_config(path, config)
    weights = path / "weights.safetensors"
    try:
        tensors = load_file(str(weights)) if weights.is_file() else {}
    except Exception as exc:  # safetensors' own error type: a truncated or overwritten file
        raise IncompatibleError(f"{weights}: damaged weights file ({str(exc).splitlines()[0]}); save or train the "
                                "model again") from None
    missing = sorted(set(config.get("tensors", [])) - set(tensors))
    if missing:
        where = "has no weights file" if not weights.is_file() else f"lacks trained weights {missing[:3]}"
        raise IncompatibleError(f"{str(path)!r} {where}: save or train the model again")
    for name, array in tensors.items():
        if array.dtype.kind == "f" and np.isnan(array).any():
            raise IncompatibleError(f"{str(path)!r}: saved weights {name!r} hold NaN (a diverged training); train "
                                    "the model again")
    return config, tensors


def check_saved_config(path: str | os.PathLike, config: Any) -> None:
    """Refuse, in one line naming the folder, a ``config.json`` this version cannot read: a newer (or missing)
    ``format``, or an entry every method relies on that is missing or of the wrong type."""
    where = repr(str(path))
    if not isinstance(config, dict):
        raise IncompatibleError(f"{where}: config.json holds a {type(config).__name__}, not a saved model's settings")
    version = config.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise IncompatibleError(f"{where}: config.json has no valid format version ({version!r}); it was not "
                                "written by edgetune's save")
    if version > FORMAT_VERSION:
        raise IncompatibleError(f"{where} was saved in format {version}, newer than this edgetune reads "
                                f"({FORMAT_VERSION}); upgrade edgetune to load it")

    def bad(entry: str, what: str) -> IncompatibleError:
        return IncompatibleError(f"{where}: config.json's {entry!r} must be {what}, not "
                                 f"{short_value(config.get(entry))}; save or train the model again")

    for entry in ("method", "model", "model_identity"):
        if not isinstance(config.get(entry), str) or not config[entry]:
            raise bad(entry, "a non-empty string")
    labels = config.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(lab, str) for lab in labels):
        raise bad("labels", "a non-empty list of label names")
    if len(set(labels)) != len(labels):
        raise bad("labels", "a list of distinct label names")
    if not isinstance(config.get("params", {}), dict):
        raise bad("params", "a mapping of parameter names to values")
    tensors = config.get("tensors", [])
    if not isinstance(tensors, list) or not all(isinstance(t, str) for t in tensors):
        raise bad("tensors", "a list of array names")
    if "template" in config and not isinstance(config["template"], str):
        raise bad("template", "a string")
    words = config.get("label_words", [])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise bad("label_words", "a list of label words")


def short_value(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_shapes(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                 expected: Mapping[str, tuple[int | None, ...]], why: str = "") -> None:
    """Refuse, in one :class:`IncompatibleError` line naming the folder, saved arrays missing from ``tensors`` or
    whose shape is not ``expected`` (name -> shape; ``None`` matches any size on that axis): what the config says
    (labels, hidden size, parameters) and what the weights hold must agree before anything is built from them."""
    for name, shape in expected.items():
        if name not in tensors:
            raise IncompatibleError(f"{str(path)!r} lacks the saved array {name!r} its config calls for; it is not "
                                    "a complete model of this method: save or train it again")
        got = tuple(np.shape(tensors[name]))
        if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape, strict=True)):
            want = "(" + ", ".join("any" if w is None else str(w) for w in shape) + (",)" if len(shape) == 1 else ")")
            raise IncompatibleError(f"{str(path)!r}: saved array {name!r} has shape {got}, but its config says "
                                    f"{want}{f' ({why})' if why else ''}; the config and the weights do not belong "
                                    "together: save or train the model again")


def short_identity(identity: str) -> str:
    """A model identity for a message: as is when short, else its start and a digest of the rest (a local
    folder's identity holds its whole config.json), on one line."""
    identity = " ".join(identity.split())
    if len(identity) <= 80:
        return identity
    import hashlib

    return f"{identity[:60]}… #{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def load(path: str | os.PathLike, model: str | Backend | None = None) -> Method:
    """Load any saved method; ``model`` (a name or backend) must be the model it was trained with."""
    from .registry import METHODS, get_method, load_all

    load_all()
    config, _ = read_saved(path)
    if config["method"] not in METHODS:
        raise IncompatibleError(f"{str(path)!r} holds a model of method {config['method']!r}, which this edgetune "
                                f"does not have (known: {', '.join(sorted(METHODS))})")
    return get_method(config["method"]).load(path, model=model)


def saved_backend_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """How to rebuild, by model name, the backend a saved method was trained with (see
    :func:`edgetune.backends.saved_backend_options`)."""
    return backend_options(config.get("backend_kind"), config.get("backend_settings"))


def restore(cls: type[Method], path: str | os.PathLike, model: str | Backend | None
            ) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """A ``cls`` built from a saved folder's parameters, with the labels, prompt and model identity it was
    trained with; returns it with the saved config and arrays for the method-specific rest.

    Checked first, without loading any model: the format and entries (:func:`read_saved`), that the folder holds
    this method, that its parameters are this method's and pass its checks, and that there is one label word per
    label (per word set). Each method's ``load`` then checks its arrays' shapes before building anything; a model
    given by name is compared with the one it was trained on before it is loaded (:attr:`Method.backend`)."""
    config, tensors = read_saved(path)
    restored_config(cls, path, config)
    params = cls.config.renamed(config.get("params", {}), warn=False)  # saved under a deprecated spelling: renamed
    obj = cls(model=model if model is not None else config["model"], **params)
    obj.labels_ = tuple(config["labels"])
    values = config.get("label_values")
    if values is not None:
        if not (isinstance(values, list) and len(values) == len(obj.labels_)
                and [str(v) for v in values] == list(obj.labels_)):
            raise IncompatibleError(f"{str(path)!r}: config.json's 'label_values' do not match its labels; the config "
                                    "was edited: save or train the model again")
        obj.label_values_ = tuple(values)
    if "template" in config:
        obj.template_ = Template(config["template"])
        obj.words_ = list(config["label_words"])
        per_label = getattr(obj, "words_per_label", 1)
        if len(obj.words_) != per_label * len(obj.labels_):
            raise IncompatibleError(f"{str(path)!r}: {len(obj.words_)} label word(s) for {len(obj.labels_)} "
                                    f"label(s) {list(obj.labels_)[:5]}" + (f" × {per_label} word sets" if per_label > 1
                                                                           else "") +
                                    "; the config was edited: save or train the model again")
    obj.identity_, obj.model_name_ = config["model_identity"], config["model"]
    obj._backend_options = saved_backend_options(config)  # a backend rebuilt by name is built as trained
    return obj, config, tensors


def restored_config(cls: type[Method], path: str | os.PathLike, config: Mapping[str, Any]) -> None:
    """Refuse a saved config that is not ``cls``'s: another method's, or parameters ``cls`` does not take or
    refuses (:meth:`Method.validate_params`), in one :class:`IncompatibleError` line naming the folder."""
    if config.get("method") != cls.name:
        raise IncompatibleError(f"{str(path)!r} holds a {config.get('method')!r} model, not {cls.name!r}")
    try:
        cls.validate_params(config.get("params", {}), warn=False)
    except ParamError as exc:
        raise IncompatibleError(f"{str(path)!r}: its saved parameters do not fit {cls.name}: {exc}") from None

