"""Content-keyed, crash-safe feature store (SQLite in WAL mode).

A key is the SHA-256 of everything that determines a query's answer: the model identity, the backend
kind and settings, the exact prompt text and the label words. A hit costs no model query. Rows are
committed batch by batch, so an interrupted run keeps everything it paid for. The standard library's
``sqlite3`` is used because it gives atomic, concurrent-reader, crash-safe writes with no extra service.

On a paid API every row is money, so a cache that cannot be used as usual is never thrown away for a
reason other than damage, and every choice is said before a query is paid:

- **locked** (another process holds a write lock; ``database is locked``): wait up to ``busy_timeout``
  seconds, saying so once (a :class:`CacheWarning`), then stop with one line (:class:`CacheLockedError`)
  naming the file and, where ``/proc`` shows it, the process holding it. The file is never moved. Opening
  checks that the cache can be written, so a lock held at start stops the run before anything is paid. A
  batch of answers paid for while a lock taken mid-run does not go away is written to a side file beside
  the cache (``<name>.pending-<time>-<pid>``), named in the error; the next open adds it to the cache.
- **read-only** (the file, or its folder, cannot be written): the cache is opened read-only and its
  answers are used; one warning, at construction (before any query), says that new answers are kept in
  memory only (an in-memory side store that :meth:`FeatureCache.get_many` reads too) and lost at exit.
- **damaged** (``malformed``, ``not a database``; at open, or on a later read or write, confirmed by
  ``PRAGMA quick_check``): the file and its ``-wal``/``-shm`` are moved aside to
  ``<name>.damaged-<time>``, never deleted; a warning names both paths; a new cache is started with the
  answers this run had already read or paid for (kept in memory, up to :data:`KEEP_BYTES`). Rows of the
  damaged file are not copied over: SQLite keeps no checksums, so a row read from a damaged file could be
  wrong without any error. Any other read or write error is one line (:class:`CacheError`).
- **a folder that cannot be made** (its parent is a file, permission denied) or a cache file that cannot
  be created: one line (:class:`CacheError`) naming the path and how to choose another (``--cache-dir``,
  ``EDGETUNE_CACHE_DIR``), raised at construction, before any query is paid. Falling back to memory was
  rejected: every answer paid for would be lost at exit, with nothing to reuse on the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import EdgetuneError

T = TypeVar("T")

#: answers read or paid for during this run that are kept in memory to refill a cache found damaged
KEEP_BYTES = 64 << 20
_SCHEMA = ("CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, scores BLOB NOT NULL, hidden BLOB NOT NULL, "
           "meta TEXT)")
_WHERE = "choose a writable folder with --cache-dir or EDGETUNE_CACHE_DIR"
Row = tuple[bytes, bytes, "str | None"]


class CacheError(EdgetuneError):
    """The feature cache cannot be opened, read or written (and is not damaged: that is repaired)."""


class CacheLockedError(CacheError):
    """Another process held the feature cache locked for longer than the busy timeout."""


class CacheWarning(UserWarning):
    """The feature cache is used in a reduced way (read-only, waiting for a lock, a damaged file moved aside)."""


def content_key(*parts: Any) -> str:
    """Stable SHA-256 of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def classify(exc: BaseException) -> str:
    """``"locked"``, ``"readonly"``, ``"damaged"`` or ``"other"`` for a :mod:`sqlite3` error."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        primary = code & 0xFF
        if primary in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED
            return "locked"
        if primary in (3, 8, 14, 23):  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH
            return "readonly"
        if primary in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
            return "damaged"
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "locked"
    if any(w in text for w in ("readonly", "read-only", "unable to open", "permission", "access denied")):
        return "readonly"
    if any(w in text for w in ("malformed", "not a database", "disk image", "encrypted")):
        return "damaged"
    return "other"


def _describe(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    cmd = " ".join(raw.replace(b"\0", b" ").decode("utf-8", "replace").split())
    return f"pid {pid}: {cmd[:80] + ('...' if len(cmd) > 80 else '')}" if cmd else f"pid {pid}"


def holders(path: str | os.PathLike) -> list[str]:
    """Best effort: the other processes that lock (``/proc/locks``, write locks first) or have open (``/proc/*/fd``)
    the SQLite file ``path`` or its ``-wal``/``-shm``; empty where ``/proc`` does not tell."""
    files = [f"{path}{suffix}" for suffix in ("", "-wal", "-shm")]
    inodes = set()
    for f in files:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(f).st_ino)
    me, writers, lockers = os.getpid(), [], []
    try:
        with open("/proc/locks") as fh:
            for line in fh:  # "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF" ("->" marks a waiter)
                fields = line.split()
                if len(fields) < 6 or "->" in fields:
                    continue
                try:
                    pid, ino = int(fields[4]), int(fields[5].rsplit(":", 1)[1])
                except (ValueError, IndexError):
                    continue
                if ino in inodes and pid > 0 and pid != me:
                    (writers if fields[3] == "WRITE" else lockers).append(pid)
    except OSError:
        pass
    pids = list(dict.fromkeys(writers or lockers))
    if not pids:
        targets = {os.path.realpath(f) for f in files}
        try:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or int(entry.name) == me:
                    continue
                try:
                    links = {os.readlink(fd.path) for fd in os.scandir(f"/proc/{entry.name}/fd")}
                except OSError:
                    continue
                if links & targets:
                    pids.append(int(entry.name))
        except OSError:
            pass
    return [_describe(pid) for pid in pids[:3]]


class FeatureCache:
    """Maps a content key to ``(scores, hidden)`` float32 vectors. ``path=None`` keeps it in memory.

    ``busy_timeout``: seconds to wait for another process's lock before :class:`CacheLockedError`. After
    construction, :attr:`read_only` says whether new answers are kept in memory only (see the module notes).
    """

    def __init__(self, path: str | os.PathLike | None, busy_timeout: float = 60.0) -> None:
        self.path = None if path is None else Path(path)
        self.busy_timeout = float(busy_timeout)
        self._probe = min(1.0, self.busy_timeout / 4)  # each try's own SQLite wait; the loop waits the rest
        self._lock = threading.Lock()
        self.read_only = False
        self._memory: dict[str, Row] = {}  # new answers of a read-only cache (the only copy)
        self._kept: dict[str, Row] = {}  # answers read or paid for this run (to refill a cache found damaged)
        self._kept_bytes = 0
        if self.path is None:
            self._db = sqlite3.connect(":memory:", check_same_thread=False)
            self._db.execute(_SCHEMA)
            return
        self._make_folder()
        self._db = self._connect()
        if not self.read_only:
            self._merge_pending()

    # -- opening ------------------------------------------------------------------------------------------
    def _make_folder(self) -> None:
        assert self.path is not None
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CacheError(f"cannot make the feature cache folder {str(folder)!r}: a file of that name is in the "
                             f"way; {_WHERE}") from None
        except NotADirectoryError:
            raise CacheError(f"cannot make the feature cache folder {str(folder)!r}: a part of its path is a file; "
                             f"{_WHERE}") from None
        except OSError as exc:
            raise CacheError(f"cannot make the feature cache folder {str(folder)!r} ({exc.strerror or exc}); "
                             f"{_WHERE}") from None

    def _connect(self) -> sqlite3.Connection:
        """The connection to :attr:`path`: read-write; read-only (with a warning); or a new file after moving a
        damaged one aside."""
        assert self.path is not None
        try:
            return self._patient(self._open_rw, "open")
        except sqlite3.DatabaseError as exc:
            kind, error = classify(exc), exc
        if kind == "readonly":
            if self.path.exists() and not self.path.is_file():
                raise CacheError(f"the feature cache {str(self.path)!r} is not a file; {_WHERE}") from None
            if not self.path.exists():
                raise CacheError(f"cannot create the feature cache {str(self.path)!r} ({error}): its folder is not "
                                 f"writable; {_WHERE}") from None
            try:
                db = self._patient(self._open_ro, "open")
            except sqlite3.DatabaseError as exc:
                if classify(exc) != "damaged":
                    raise CacheError(f"cannot open the feature cache {str(self.path)!r} ({error}; read-only: {exc}); "
                                     f"{_WHERE}") from None
                kind, error = "damaged", exc
            else:
                self.read_only = True
                self._warn(f"the feature cache {str(self.path)!r} is read-only ({error}): its answers are used, but "
                           "new answers are kept in memory only and will be paid for again on the next run; make it "
                           f"writable or {_WHERE}")
                return db
        if kind == "damaged":
            self._move_aside(error)
            return self._patient(self._open_rw, "open")
        raise CacheError(f"cannot open the feature cache {str(self.path)!r}: {error}") from None

    def _open_rw(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=self._probe)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute("SELECT key, scores FROM features LIMIT 1").fetchall()
            db.commit()
            # can it be written? (a lock or a read-only file shows now, before any query is paid; never committed)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO features VALUES ('edgetune:write-probe', x'', x'', NULL)")
            db.rollback()
        except BaseException:
            db.close()
            raise
        return db

    def _open_ro(self) -> sqlite3.Connection:
        uri = Path(os.path.abspath(self.path)).as_uri()  # type: ignore[arg-type]
        try:
            return self._check_ro(sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False,
                                                  timeout=self._probe))
        except sqlite3.DatabaseError as exc:
            if classify(exc) != "readonly":
                raise
        # a WAL file in a folder where its -shm cannot be made: read it as a file nobody changes
        return self._check_ro(sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False))

    @staticmethod
    def _check_ro(db: sqlite3.Connection) -> sqlite3.Connection:
        try:
            db.execute("SELECT key, scores FROM features LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    # -- trouble ------------------------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        frame, level = sys._getframe(0), 1  # point the warning at the first caller outside this module
        while frame is not None and frame.f_globals.get("__name__") == __name__:
            frame, level = frame.f_back, level + 1
        warnings.warn(message, CacheWarning, stacklevel=level)

    def _patient(self, op: Callable[[], T], doing: str) -> T:
        """``op()``, tried again while the database is locked, for up to :attr:`busy_timeout` seconds (said once);
        then :class:`CacheLockedError`. Other errors pass through."""
        start, said = time.monotonic(), False
        while True:
            try:
                return op()
            except sqlite3.OperationalError as exc:
                if classify(exc) != "locked":
                    raise
            waited = time.monotonic() - start
            if waited >= self.busy_timeout or not said:
                who = holders(self.path) if self.path is not None else []
                by = f" by {'; '.join(who)}" if who else " by another process"
            if waited >= self.busy_timeout:
                raise CacheLockedError(
                    f"the feature cache {str(self.path)!r} is locked{by} and stayed locked for {waited:.1f} s "
                    f"(while trying to {doing} it); let that process finish, or use another cache folder "
                    "(--cache-dir or EDGETUNE_CACHE_DIR)") from None
            if not said:
                self._warn(f"the feature cache {str(self.path)!r} is locked{by}; waiting up to "
                           f"{self.busy_timeout:g} s for it")
                said = True
            time.sleep(min(0.05, self._probe))

    def _aside_name(self) -> Path:
        assert self.path is not None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside, n = self.path.with_name(f"{self.path.name}.damaged-{stamp}"), 1
        while any(Path(f"{aside}{s}").exists() for s in ("", "-wal", "-shm")):
            aside, n = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}"), n + 1
        return aside

    def _move_aside(self, error: BaseException) -> None:
        """Move the damaged file (and its -wal, -shm) aside, never deleting it; warn naming both paths."""
        assert self.path is not None
        aside = self._aside_name()
        try:
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{self.path}{suffix}")
                if part.exists():
                    os.replace(part, f"{aside}{suffix}")
        except OSError as exc:
            raise CacheError(f"the feature cache {str(self.path)!r} is damaged ({error}) and cannot be moved aside "
                             f"({exc.strerror or exc}); remove it, or {_WHERE}") from None
        kept = f"; the {len(self._kept)} answers this run already had are kept in it" if self._kept else ""
        self._warn(f"the feature cache {str(self.path)!r} was damaged ({error}); moved it to {str(aside)!r} and "
                   f"started a new one{kept} (other features will be queried again)")

    def _damage(self, exc: sqlite3.DatabaseError, doing: str) -> None:
        """A read or write failed with ``exc`` (not a lock): if ``PRAGMA quick_check`` (or the error itself) says
        the file is damaged, move it aside and continue on a new one refilled from memory; else one line."""
        assert self.path is not None
        try:  # (a lock here is waited for and then one line: a lock never moves the file)
            verdict = self._patient(lambda: [str(r[0]) for r in self._db.execute("PRAGMA quick_check")], "check")
        except sqlite3.DatabaseError as check:
            if classify(check) != "damaged":
                raise CacheError(f"cannot {doing} the feature cache {str(self.path)!r} ({exc}; PRAGMA quick_check: "
                                 f"{check}); {_WHERE}") from None
            verdict = [str(check)]
        if classify(exc) != "damaged" and verdict == ["ok"]:
            raise CacheError(f"cannot {doing} the feature cache {str(self.path)!r} ({exc}; PRAGMA quick_check finds "
                             f"no damage); {_WHERE}") from None
        self._db.close()
        if self.read_only:  # it cannot be replaced: stop reading it; everything is in memory from now on (as said)
            self._db = sqlite3.connect(":memory:", check_same_thread=False)
            self._db.execute(_SCHEMA)
            self._memory = {**self._kept, **self._memory}
            self._warn(f"the read-only feature cache {str(self.path)!r} is damaged ({exc}); it is no longer read, and "
                       "every answer is kept in memory only from now on")
            return
        first = re.sub(r"\s+", " ", verdict[0])[:120] if verdict != ["ok"] else ""
        self._move_aside(f"{exc}; quick_check: {first}" if first and first != str(exc) else exc)
        self._db = self._patient(self._open_rw, "open")
        if self._kept:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)",
                                 [(k, *row) for k, row in self._kept.items()])
            self._db.commit()

    def _keep(self, key: str, row: Row) -> None:
        if key not in self._kept and self._kept_bytes < KEEP_BYTES:
            self._kept[key] = row
            self._kept_bytes += len(row[0]) + len(row[1]) + len(key)

    # -- reading and writing ------------------------------------------------------------------------------
    def _reading(self, op: Callable[[], T]) -> T:
        """``op()`` on the database: a lock is waited for; damage moves the file aside, then ``op`` runs again on
        the new one (refilled from memory); anything else is one line."""
        if self.path is None:
            return op()
        try:
            return self._patient(op, "read")
        except sqlite3.DatabaseError as exc:
            self._damage(exc, "read")
            return self._patient(op, "read")

    def _read(self, chunk: list[str]) -> list[tuple[str, bytes, bytes, str | None]]:
        sql = f"SELECT key, scores, hidden, meta FROM features WHERE key IN ({','.join('?' * len(chunk))})"
        return self._reading(lambda: self._db.execute(sql, chunk).fetchall())

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        unique = list(dict.fromkeys(keys))
        found: dict[str, tuple[bytes, bytes]] = {}
        with self._lock:
            for start in range(0, len(unique), 500):
                for key, s, h, meta in self._read(unique[start : start + 500]):
                    found[key] = (s, h)
                    if self.path is not None:
                        self._keep(key, (s, h, meta))
            for key in unique:
                if key in self._memory:
                    found[key] = self._memory[key][:2]
        return {k: (np.frombuffer(s, dtype=np.float32), np.frombuffer(h, dtype=np.float32))
                for k, (s, h) in found.items()}

    def put_many(self, items: Iterable[tuple[str, np.ndarray, np.ndarray]], meta: dict | None = None) -> None:
        text = None if meta is None else json.dumps(meta)
        rows = [
            (k, np.ascontiguousarray(s, dtype=np.float32).tobytes(),
             np.ascontiguousarray(h, dtype=np.float32).tobytes(), text)
            for k, s, h in items
        ]
        with self._lock:
            if self.read_only:
                self._memory.update((k, (s, h, m)) for k, s, h, m in rows)
                return
            if self.path is not None:
                for k, s, h, m in rows:
                    self._keep(k, (s, h, m))
            try:
                self._patient(lambda: self._write(rows), "write")
            except CacheLockedError as exc:  # paid for, but the cache stayed locked: keep them beside it
                kept = self._write_pending(rows)
                raise CacheLockedError(f"{exc}. The {len(rows)} answer(s) just paid for are kept in {str(kept)!r}; "
                                       "the next run that opens this cache adds them to it") from None
            except sqlite3.DatabaseError as exc:
                if self.path is None:
                    raise
                if classify(exc) == "readonly":  # it became read-only during the run: keep the rest in memory
                    self.read_only = True
                    self._memory.update((k, (s, h, m)) for k, s, h, m in rows)
                    self._warn(f"the feature cache {str(self.path)!r} can no longer be written ({exc}); new answers "
                               "are kept in memory only and will be paid for again on the next run")
                    return
                self._damage(exc, "write")  # moved aside (this batch is among the kept answers) or one line
                self._patient(lambda: self._write(rows), "write")

    def _write_pending(self, rows: list[tuple[str, bytes, bytes, str | None]]) -> Path:
        """Write ``rows`` (answers paid for that the locked cache could not take) to a side file beside it,
        ``<name>.pending-<time>-<pid>``, which :meth:`_merge_pending` adds to the cache when it is next opened."""
        assert self.path is not None
        side = self.path.with_name(f"{self.path.name}.pending-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        db = sqlite3.connect(str(side))
        try:
            db.execute(_SCHEMA)
            db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)
            db.commit()
        finally:
            db.close()
        return side

    def _merge_pending(self) -> None:
        """Add the answers of side files left by a run that found this cache locked (:meth:`_write_pending`), then
        remove each side file once its rows are committed here. A side file that cannot be read is left alone."""
        assert self.path is not None
        for side in sorted(self.path.parent.glob(f"{self.path.name}.pending-*")):
            try:
                src = sqlite3.connect(f"{side.resolve().as_uri()}?mode=ro", uri=True)
                try:
                    rows = src.execute("SELECT key, scores, hidden, meta FROM features").fetchall()
                finally:
                    src.close()
            except sqlite3.DatabaseError as exc:
                self._warn(f"a side file of answers {str(side)!r} cannot be read ({exc}); it is left as it is")
                continue
            self._patient(lambda rows=rows: self._write(rows), "write")
            side.unlink()
            self._warn(f"added {len(rows)} answer(s) from {str(side)!r} (kept there while the cache was locked)")

    def _write(self, rows: list[tuple[str, bytes, bytes, str | None]]) -> None:
        try:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)
            self._db.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            raise

    def __len__(self) -> int:
        with self._lock:
            n = int(self._reading(lambda: self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0]))
            mine = list(self._memory)
            n += len(mine) - sum(len(self._read(mine[i : i + 500])) for i in range(0, len(mine), 500))
            return n

    def close(self) -> None:
        with self._lock:
            self._db.close()
