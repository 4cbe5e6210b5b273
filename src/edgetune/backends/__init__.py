"""How a frozen model is reached: in-process transformers, an embedding model, (later) a remote API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Backend, Features
from .cache import FeatureCache
from .embedding import EmbeddingBackend
from .local import LocalBackend
from .models import DEFAULT_MODEL, PACKAGED, resolve_model
from .models import PackagedModel as PackagedModel


def load_backend(model: str = DEFAULT_MODEL, *, kind: str | None = None, cache: FeatureCache | str | None = "default",
                 cache_root: str | None = None, **kwargs: Any) -> Backend:
    """A backend for a model name. ``cache="default"`` uses ``<cache dir>/features.sqlite``; ``None``
    keeps features in memory only; a path uses that file."""
    from ..paths import cache_dir

    if cache == "default":
        cache = FeatureCache(cache_dir(cache_root) / "features.sqlite")
    elif isinstance(cache, str):
        cache = FeatureCache(cache)
    if kind is not None:
        resolved_kind = kind
    elif model in PACKAGED:
        resolved_kind = PACKAGED[model].kind
    else:
        resolved_kind = "embedding" if (Path(model).expanduser() / "modules.json").is_file() else None
    if resolved_kind == "embedding":
        return EmbeddingBackend.load(model, cache=cache, cache_root=cache_root, **kwargs)
    return LocalBackend.load(model, kind=kind, cache=cache, cache_root=cache_root, **kwargs)


__all__ = ["DEFAULT_MODEL", "PACKAGED", "Backend", "EmbeddingBackend", "FeatureCache", "Features",
           "LocalBackend", "load_backend", "resolve_model"]
