"""Content-keyed, crash-safe feature store (SQLite in WAL mode).

A key is the SHA-256 of everything that determines a query's answer: the model identity, the backend
kind and settings, the exact prompt text and the label words. A hit costs no model query. Rows are
committed batch by batch, so an interrupted run keeps everything it paid for. The standard library's
``sqlite3`` is used because it gives atomic, concurrent-reader, crash-safe writes with no extra service.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def content_key(*parts: Any) -> str:
    """Stable SHA-256 of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class FeatureCache:
    """Maps a content key to ``(scores, hidden)`` float32 vectors. ``path=None`` keeps it in memory."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:  # damaged (truncated, overwritten): a cache is only a cache
            assert self.path is not None
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{self.path}{suffix}")
                if part.exists():
                    os.replace(part, f"{aside}{suffix}")
            warnings.warn(f"the feature cache {str(self.path)!r} was damaged ({exc}); moved it to {str(aside)!r} "
                          "and started an empty one (features will be queried again)", stacklevel=2)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:" if self.path is None else str(self.path), check_same_thread=False, timeout=60)
        try:
            if self.path is not None:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, scores BLOB NOT NULL, "
                       "hidden BLOB NOT NULL, meta TEXT)")
            db.execute("SELECT key, scores FROM features LIMIT 1").fetchall()
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, scores, hidden FROM features WHERE key IN ({marks})", chunk)
                for key, s, h in rows:
                    out[key] = (np.frombuffer(s, dtype=np.float32), np.frombuffer(h, dtype=np.float32))
        return out

    def put_many(self, items: Iterable[tuple[str, np.ndarray, np.ndarray]], meta: dict | None = None) -> None:
        text = None if meta is None else json.dumps(meta)
        rows = [
            (k, np.ascontiguousarray(s, dtype=np.float32).tobytes(),
             np.ascontiguousarray(h, dtype=np.float32).tobytes(), text)
            for k, s, h in items
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
