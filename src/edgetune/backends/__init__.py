"""How a frozen model is reached: in-process transformers, an embedding model, a remote OpenAI-compatible API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import Backend, Features
from .cache import FeatureCache
from .models import DEFAULT_MODEL, PACKAGED, resolve_model
from .models import PackagedModel as PackagedModel

#: backend classes by module, imported on first use (torch and transformers load only when a model does)
_LAZY = {"LocalBackend": ".local", "EmbeddingBackend": ".embedding", "OpenAIBackend": ".remote",
         "RemoteError": ".remote"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_backend(model: str = DEFAULT_MODEL, *, kind: str | None = None, cache: FeatureCache | str | None = "default",
                 cache_root: str | None = None, base_url: str | None = None, **kwargs: Any) -> Backend:
    """A backend for a model name. ``cache="default"`` uses ``<cache dir>/features.sqlite``; ``None``
    keeps features in memory only; a path uses that file. With ``base_url`` (or ``kind="openai"``) the
    model is the name a remote OpenAI-compatible server knows it by (:class:`OpenAIBackend`)."""
    from ..paths import cache_dir

    if cache == "default":
        cache = FeatureCache(cache_dir(cache_root) / "features.sqlite", busy_timeout=cache_busy_timeout())
    elif isinstance(cache, str):
        cache = FeatureCache(cache, busy_timeout=cache_busy_timeout())
    if base_url is not None or kind == "openai":
        if base_url is None:
            raise ModelError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        from .remote import OpenAIBackend

        kwargs.pop("max_length", None)
        return OpenAIBackend(model, base_url, cache=cache, **kwargs)
    if kind is not None:
        resolved_kind = kind
    elif model in PACKAGED:
        resolved_kind = PACKAGED[model].kind
    else:
        resolved_kind = "embedding" if (Path(model).expanduser() / "modules.json").is_file() else None
    # (a kind that contradicts a packaged model is refused by resolve_model, before any model is loaded)
    if resolved_kind == "embedding":
        from .embedding import EmbeddingBackend

        return EmbeddingBackend.load(model, cache=cache, cache_root=cache_root, **kwargs)
    from .local import LocalBackend

    return LocalBackend.load(model, kind=kind, cache=cache, cache_root=cache_root, **kwargs)


def cache_busy_timeout() -> float:
    """Seconds to wait for a feature cache another process holds locked: ``$EDGETUNE_CACHE_TIMEOUT``, else 60."""
    import math
    import os

    raw = os.environ.get("EDGETUNE_CACHE_TIMEOUT", "60")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ModelError(f"EDGETUNE_CACHE_TIMEOUT must be a number of seconds ≥ 0, not {raw!r}")
    return value


#: which backend class serves each kind (by name: see ``_LAZY``)
BACKEND_CLASSES: dict[str, str] = {"causal": "LocalBackend", "masked": "LocalBackend", "seq2seq": "LocalBackend",
                                   "embedding": "EmbeddingBackend", "openai": "OpenAIBackend"}


def saved_backend_options(kind: str | None, settings: dict[str, Any] | None) -> dict[str, Any]:
    """``load_backend`` options (``kind`` first) that rebuild, by model name, the backend a method was saved
    with: each backend class says which of its recorded settings it needs (an embedding model's score
    scale, a server's top-N log-probabilities, ...). A server backend also needs ``base_url``."""
    if kind not in BACKEND_CLASSES:
        return {}
    return {"kind": kind, **__getattr__(BACKEND_CLASSES[kind]).options_from_settings(dict(settings or {}))}


__all__ = ["DEFAULT_MODEL", "PACKAGED", "Backend", "EmbeddingBackend", "FeatureCache", "Features",
           "LocalBackend", "OpenAIBackend", "RemoteError", "load_backend", "resolve_model", "saved_backend_options"]
