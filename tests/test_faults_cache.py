"""Faults of the SQLite feature cache: a lock held by another process, a read-only file or folder, damage past the
first page, a folder that cannot be made. A lock or a read-only cache is never moved aside; damage is, by name;
every choice is said before a query is paid."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgetune.backends import FeatureCache, load_backend
from edgetune.backends.base import Backend
from edgetune.backends.cache import CacheError, CacheLockedError, CacheWarning, classify
from edgetune.data import Example, Template
from edgetune.errors import EdgetuneError

TEMPLATE = Template("{text} It was {mask}")
WORDS = ["bad", "good"]


class CountingBackend(Backend):
    """A backend whose 'model' is arithmetic: it counts the queries it is paid for and records, at each one, the
    cache warnings already given (so a test can tell whether a warning came before the money was spent)."""

    kind = "counting"

    def __init__(self, cache: FeatureCache | None, seen: list | None = None) -> None:
        super().__init__("counting", cache, batch_size=4, progress=False)
        self.seen = seen if seen is not None else []
        self.warned_at_query: list[int] = []

    @property
    def identity(self) -> str:
        return "counting@1"

    def check_label_words(self, words):
        return list(range(len(words)))

    def _encode(self, prompt, max_length=None):
        return prompt.text_before, len(prompt.text_before), False

    def _run(self, batch, label_ids, words):
        self.warned_at_query.append(sum(issubclass(w.category, CacheWarning) for w in self.seen))
        scores = np.array([[len(t), -len(t)] for t in batch], dtype=np.float32)
        hidden = np.array([[len(t), t.count(" "), 1.0] for t in batch], dtype=np.float32)
        return scores, hidden


def examples(n: int, prefix: str = "text") -> list[Example]:
    return [Example(f"{prefix} {i} " + "word " * (i % 7)) for i in range(n)]


def rows(n: int, start: int = 0, width: int = 64) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(f"key{i}", np.array([i, -i], np.float32), np.full(width, i, np.float32)) for i in range(start, start + n)]


def filled(path: Path, n: int = 10, width: int = 4) -> Path:
    cache = FeatureCache(path)
    cache.put_many(rows(n, width=width))
    cache.close()
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file in ``folder`` with its inode and content hash: a rename or a write changes it."""
    return {p.name: (p.stat().st_ino, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir()) if p.is_file()}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# -- read-only, even for root ----------------------------------------------------------------------------------
def _bites(path: Path) -> bool:
    """Whether writing to ``path`` (a file: append; a folder: create a file) is refused."""
    try:
        if path.is_dir():
            probe = path / ".write-probe"
            probe.touch()
            probe.unlink()
        else:
            with open(path, "ab"):
                pass
    except PermissionError:
        return True
    return False


@contextlib.contextmanager
def read_only(*paths: Path):
    """Make ``paths`` unwritable: ``chmod`` for a normal user; as root (whom modes do not stop) the immutable flag
    (``chattr +i``), which stops root too. Skips only where neither can be made to bite."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        undo = [lambda: [p.chmod(m) for p, m in modes.items()]]
    else:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: no way to make a file read-only for root")
        done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"running as root and chattr +i failed ({done.stderr.strip()}): cannot make a file read-only")
        undo = [lambda: subprocess.run(["chattr", "-i", *map(str, paths)], check=True)]
    try:
        for p in paths:
            if not _bites(p):
                pytest.skip(f"this file system does not refuse writes to {p} (read-only cannot be simulated)")
        yield
    finally:
        undo[0]()


# -- locked by another process ---------------------------------------------------------------------------------
@contextlib.contextmanager
def locked_by_other_process(path: Path):
    """A real second process holding ``BEGIN EXCLUSIVE`` on ``path`` until the block ends."""
    script = ("import sqlite3, sys, time\n"
              "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "db.execute('BEGIN EXCLUSIVE')\n"
              "print('locked', flush=True)\n"
              "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _rollback_journal_cache(path: Path) -> Path:
    """A cache file still in SQLite's default rollback-journal mode (made by another tool, or an older edgetune):
    an exclusive lock there blocks even reading."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE features (key TEXT PRIMARY KEY, scores BLOB NOT NULL, hidden BLOB NOT NULL, meta TEXT)")
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("journal", ["wal", "rollback"])
def test_a_cache_locked_at_open_waits_then_stops_with_one_line_naming_the_process(tmp_path, journal):
    path = tmp_path / "features.sqlite"
    filled(path) if journal == "wal" else _rollback_journal_cache(path)
    before = snapshot(tmp_path)
    with locked_by_other_process(path) as proc, pytest.warns(CacheWarning, match="locked.*waiting up to 0.5 s"):
        start = time.monotonic()
        with pytest.raises(CacheLockedError) as err:
            FeatureCache(path, busy_timeout=0.5)
        waited = time.monotonic() - start
    message = one_line(err.value)
    assert str(path) in message and f"pid {proc.pid}" in message, message
    assert 0.5 <= waited < 10
    assert isinstance(err.value, EdgetuneError)
    assert not list(tmp_path.glob("*damaged*"))  # never renamed: the lock was contention, not damage
    after = snapshot(tmp_path)
    assert after["features.sqlite"] == before["features.sqlite"]


def test_a_lock_released_while_waiting_is_waited_for(tmp_path):
    path = filled(tmp_path / "features.sqlite")
    script = ("import sqlite3, sys, time\n"
              "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "db.execute('BEGIN EXCLUSIVE')\n"
              "print('locked', flush=True)\n"
              "time.sleep(2.5)\n"
              "db.execute('ROLLBACK')\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.warns(CacheWarning, match="waiting up to 20 s"):
            cache = FeatureCache(path, busy_timeout=20)
        assert len(cache.get_many([k for k, _, _ in rows(10)])) == 10
        cache.put_many(rows(1, start=10))
        assert len(cache) == 11
        cache.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_lock_taken_during_the_run_stops_writes_with_one_line_and_never_renames(tmp_path):
    path = filled(tmp_path / "features.sqlite")
    cache = FeatureCache(path, busy_timeout=0.5)
    with locked_by_other_process(path) as proc:
        assert len(cache.get_many([k for k, _, _ in rows(10)])) == 10  # WAL: reading goes on under a write lock
        with pytest.warns(CacheWarning, match="locked"), pytest.raises(CacheLockedError) as err:
            cache.put_many(rows(2, start=10))
        message = one_line(err.value)
        assert f"pid {proc.pid}" in message and "write" in message
    assert not list(tmp_path.glob("*damaged*"))
    cache.put_many(rows(2, start=10))  # the lock is gone: the same cache writes again
    assert len(cache) == 12
    cache.close()
    assert len(FeatureCache(path)) == 12


def test_answers_paid_for_while_locked_are_kept_beside_the_cache_and_added_on_the_next_open(tmp_path):
    path = filled(tmp_path / "features.sqlite")
    cache = FeatureCache(path, busy_timeout=0.5)
    paid = rows(3, start=10)
    with locked_by_other_process(path), pytest.warns(CacheWarning), pytest.raises(CacheLockedError) as err:
        cache.put_many(paid)
    cache.close()
    (side,) = tmp_path.glob("features.sqlite.pending-*")
    assert str(side) in one_line(err.value) and "3 answer(s)" in str(err.value)
    with pytest.warns(CacheWarning, match="added 3 answer"):
        again = FeatureCache(path)
    assert not side.exists() and len(again) == 13
    got = again.get_many([k for k, _, _ in paid])
    for key, scores, hidden in paid:
        np.testing.assert_array_equal(got[key][0], scores)
        np.testing.assert_array_equal(got[key][1], hidden)


# -- read-only ---------------------------------------------------------------------------------------------------
def _warm_read_only_run(tmp_path: Path, *targets: Path) -> None:
    """A warm cache made read-only: its answers are used, the warning comes at construction (before any query is
    paid), new answers are kept in memory and read back, and nothing on disk is renamed or changed."""
    path = tmp_path / "features.sqlite"
    warm = CountingBackend(FeatureCache(path))
    first = warm.features(examples(6), TEMPLATE, WORDS)
    warm.cache.close()
    assert first.queries == 6
    before = snapshot(tmp_path)
    with read_only(*targets), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cache = FeatureCache(path)
        assert [str(w.message) for w in seen if issubclass(w.category, CacheWarning)], "no warning at construction"
        message = next(str(w.message) for w in seen if issubclass(w.category, CacheWarning))
        assert "read-only" in message and "memory only" in message and str(path) in message
        assert cache.read_only
        backend = CountingBackend(cache, seen)
        again = backend.features(examples(10), TEMPLATE, WORDS)  # 6 known, 4 new
        assert (again.queries, again.cache_hits) == (4, 6)
        assert backend.warned_at_query and all(n >= 1 for n in backend.warned_at_query)  # said before paying
        np.testing.assert_array_equal(again.scores[:6], first.scores)
        third = backend.features(examples(10), TEMPLATE, WORDS)  # the new ones come from memory
        assert (third.queries, third.cache_hits) == (0, 10)
        assert len(cache) == 10
        assert sum(issubclass(w.category, CacheWarning) for w in seen) == 1  # warned once
        cache.close()
        assert snapshot(tmp_path).items() >= before.items()  # nothing renamed or rewritten
        assert not list(tmp_path.glob("*damaged*"))


def test_a_read_only_cache_file_is_used_for_reads_and_new_answers_kept_in_memory(tmp_path):
    _warm_read_only_run(tmp_path, tmp_path / "features.sqlite")


def test_a_cache_in_a_read_only_folder_is_used_for_reads_and_new_answers_kept_in_memory(tmp_path):
    _warm_read_only_run(tmp_path, tmp_path)


def test_a_read_only_file_in_a_read_only_folder_is_used_for_reads(tmp_path):
    _warm_read_only_run(tmp_path, tmp_path / "features.sqlite", tmp_path)


def test_no_cache_file_in_a_read_only_folder_is_one_line_before_any_query(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder), pytest.raises(CacheError) as err:
        FeatureCache(folder / "features.sqlite")
    message = one_line(err.value)
    assert str(folder / "features.sqlite") in message and "--cache-dir" in message and "EDGETUNE_CACHE_DIR" in message
    with read_only(folder), pytest.raises(CacheError) as err:
        FeatureCache(folder / "sub" / "features.sqlite")
    assert str(folder / "sub") in one_line(err.value)


# -- a folder that cannot be made --------------------------------------------------------------------------------
def test_a_cache_folder_under_a_file_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for path in (blocker / "features.sqlite", blocker / "deeper" / "features.sqlite"):
        with pytest.raises(CacheError) as err:
            FeatureCache(path)
        message = one_line(err.value)
        assert str(path.parent) in message and "--cache-dir" in message and "EDGETUNE_CACHE_DIR" in message
    assert blocker.read_text() == "not a folder"


def test_load_backend_stops_on_an_unusable_cache_folder_before_loading_a_model(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # a model that does not exist: the cache is checked first, so the cache's error is the one seen
    with pytest.raises(CacheError, match="a-file"):
        load_backend("no-such-model-anywhere", cache_root=str(blocker))


def test_a_cache_path_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "features.sqlite").mkdir()
    with pytest.raises(CacheError) as err:
        FeatureCache(tmp_path / "features.sqlite")
    assert "not a file" in one_line(err.value)
    assert (tmp_path / "features.sqlite").is_dir() and not list(tmp_path.glob("*damaged*"))


# -- damaged -----------------------------------------------------------------------------------------------------
def damage_a_middle_page(path: Path) -> bytes:
    """Overwrite one page in the middle of a many-page cache (closed cleanly: no -wal holds newer pages). It still
    opens (its first page is sound) and ``PRAGMA quick_check`` fails. Returns the damaged file's bytes."""
    assert not list(path.parent.glob(f"{path.name}-*"))
    pages = path.stat().st_size // 4096
    assert pages > 50
    with open(path, "r+b") as fh:
        fh.seek((pages // 2) * 4096)
        fh.write(np.random.default_rng(0).bytes(4096))
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT key FROM features LIMIT 1").fetchall()  # the first page still reads
        try:
            verdict = db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError:
            verdict = [("raised",)]
        assert verdict != [("ok",)]
    finally:
        db.close()
    return path.read_bytes()


def test_a_cache_damaged_past_its_first_page_is_moved_aside_by_name_on_the_first_read(tmp_path):
    path = filled(tmp_path / "features.sqlite", n=3000, width=64)
    keys = [k for k, _, _ in rows(3000)]
    damaged = damage_a_middle_page(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache = FeatureCache(path)  # opens without complaint: the damage is further in
    with pytest.warns(CacheWarning, match="was damaged") as seen:
        found = cache.get_many(keys)  # before: sqlite3.DatabaseError, on this and every later run
    (aside,) = tmp_path.glob("features.sqlite.damaged-*[0-9]")
    message = str(seen[0].message)
    assert str(path) in message and str(aside) in message
    assert aside.read_bytes()[:4096] == damaged[:4096]  # kept, not deleted
    assert len(found) < len(keys)
    for key, (scores, hidden) in found.items():  # what was read before the damaged page is sound, and kept
        i = int(key[3:])
        np.testing.assert_array_equal(scores, [i, -i])
        np.testing.assert_array_equal(hidden, np.full(64, i))
    cache.put_many(rows(5, start=5000))
    assert len(cache) == len(found) + 5
    cache.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    db.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(FeatureCache(path).get_many([*keys, "key5000"])) == len(found) + 1  # the next run: no word


def test_damage_found_while_running_keeps_what_this_run_already_paid_for(tmp_path):
    path = filled(tmp_path / "features.sqlite", n=3000, width=64)
    keys = [k for k, _, _ in rows(3000)]
    damage_a_middle_page(path)
    cache = FeatureCache(path)
    new = [(f"new{i}", np.array([i, i], np.float32), np.ones(3, np.float32)) for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)  # the write itself may or may not touch the damaged page
        cache.put_many(new)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        cache.get_many(keys)
    assert list(tmp_path.glob("features.sqlite.damaged-*"))
    got = cache.get_many([k for k, _, _ in new])
    assert sorted(got) == sorted(k for k, _, _ in new)
    np.testing.assert_array_equal(got["new3"][0], [3, 3])
    cache.close()
    assert len(FeatureCache(path).get_many([k for k, _, _ in new])) == 4  # in the new file, not only in memory


def test_a_backend_on_a_damaged_cache_pays_again_only_for_what_was_lost(tmp_path):
    path = tmp_path / "features.sqlite"
    warm = CountingBackend(FeatureCache(path))
    assert warm.features(examples(3000), TEMPLATE, WORDS).queries == 3000
    warm.cache.close()
    damage_a_middle_page(path)
    backend = CountingBackend(FeatureCache(path))
    with pytest.warns(CacheWarning, match="was damaged"):
        again = backend.features(examples(3000), TEMPLATE, WORDS)  # before: sqlite3.DatabaseError
    assert 0 < again.queries < 3000 and again.cache_hits == 3000 - again.queries
    assert backend.features(examples(3000), TEMPLATE, WORDS).queries == 0


def test_a_cache_whose_first_page_is_garbage_is_moved_aside_by_name(tmp_path):
    path = tmp_path / "features.sqlite"
    path.write_bytes(b"\0garbage" * 1024)
    with pytest.warns(CacheWarning, match="was damaged") as seen:
        cache = FeatureCache(path)
    (aside,) = tmp_path.glob("features.sqlite.damaged-*")
    assert str(aside) in str(seen[0].message) and aside.read_bytes() == b"\0garbage" * 1024
    assert len(cache) == 0
    cache.close()


def test_another_programs_database_is_not_moved_aside(tmp_path):
    path = tmp_path / "features.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE features (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(CacheError) as err:
        FeatureCache(path)
    assert str(path) in one_line(err.value)
    assert not list(tmp_path.glob("*damaged*"))


# -- what already worked -----------------------------------------------------------------------------------------
def test_a_healthy_cache_is_wal_and_survives_reopening(tmp_path):
    path = filled(tmp_path / "features.sqlite")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache = FeatureCache(path)
        assert len(cache) == 10 and not cache.read_only
        cache.close()


@pytest.mark.parametrize(("error", "kind"), [
    (sqlite3.OperationalError("database is locked"), "locked"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "readonly"),
    (sqlite3.OperationalError("unable to open database file"), "readonly"),
    (sqlite3.DatabaseError("database disk image is malformed"), "damaged"),
    (sqlite3.DatabaseError("file is not a database"), "damaged"),
    (sqlite3.OperationalError("no such column: key"), "other"),
    (sqlite3.OperationalError("database or disk is full"), "other"),
])
def test_sqlite_errors_are_told_apart(error, kind):
    assert classify(error) == kind


def test_a_read_only_cache_found_damaged_is_left_alone_and_the_run_goes_on_in_memory(tmp_path):
    path = filled(tmp_path / "features.sqlite", n=3000, width=64)
    keys = [k for k, _, _ in rows(3000)]
    damage_a_middle_page(path)
    before = snapshot(tmp_path)
    with read_only(path), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cache = FeatureCache(path)
        assert cache.read_only
        found = cache.get_many(keys)
        messages = [str(w.message) for w in seen if issubclass(w.category, CacheWarning)]
        assert len(messages) == 2 and "read-only" in messages[0] and "damaged" in messages[1], messages
        assert len(found) < len(keys)
        cache.put_many(rows(2, start=5000))
        assert set(cache.get_many([*found, "key5000", "key5001"])) == {*found, "key5000", "key5001"}
        cache.close()
    assert snapshot(tmp_path).items() >= before.items()
    assert not list(tmp_path.glob("*damaged*"))


def test_a_read_error_that_is_not_damage_is_one_line_and_moves_nothing(tmp_path):
    path = filled(tmp_path / "features.sqlite")
    cache = FeatureCache(path)

    class FailingReads:  # the connection, but every lookup fails as a flaky disk would (quick_check still passes)
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql.startswith("SELECT key"):
                raise sqlite3.OperationalError("disk I/O error")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

    real = cache._db
    cache._db = FailingReads(real)
    with pytest.raises(CacheError) as err:
        cache.get_many(["key1"])
    message = one_line(err.value)
    assert "disk I/O error" in message and "quick_check finds no damage" in message and str(path) in message
    assert not list(tmp_path.glob("*damaged*"))
    real.close()
