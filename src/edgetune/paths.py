"""Where edgetune reads data and keeps its caches (no global state: every function takes overrides)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import DataError


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Per-user cache root: ``override``, else ``$EDGETUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgetune``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("EDGETUNE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgetune"


#: the task data installed with edgetune (see its SOURCES.md: sources, licences, what was capped)
PACKAGED_DATA = Path(__file__).resolve().parent / "data" / "packaged"


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Root of the task data: ``override``, else ``$EDGETUNE_DATA_DIR``, else the data installed with
    edgetune (:data:`PACKAGED_DATA`).

    The folder holds one sub-folder per task with ``<split>.jsonl`` files (or ``<split>.jsonl.xz``, as
    installed); nothing is downloaded.
    """
    raw = override if override is not None else os.environ.get("EDGETUNE_DATA_DIR")
    if not raw:
        if not PACKAGED_DATA.is_dir():
            raise DataError(f"edgetune's task data is missing from {str(PACKAGED_DATA)!r} (a damaged install?): "
                            "reinstall edgetune, or pass --data-dir / set EDGETUNE_DATA_DIR to a copy")
        return PACKAGED_DATA
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist: pass --data-dir or set EDGETUNE_DATA_DIR")
    return path


def safe_name(name: str) -> str:
    """``name`` (a task name, a label, anything from data or a config) as one file-name component: characters
    other than letters, digits, ``.``, ``_`` and ``-`` become ``_``, and it never starts with a dot, so it can
    be neither a path (``../x``, ``a/b``) nor a hidden or special entry (``..``)."""
    safe = re.sub(r"[^\w.-]", "_", str(name), flags=re.ASCII).lstrip(".")
    return safe[:120] or "_"
