"""The one record format of every evaluation: an append-only JSONL results file.

Lines, each a JSON object with a ``type``:

- ``header``: one per invocation (config, machine, time, cells to run);
- ``extraction``: whenever training prompts (or a test set) were really sent to a model, with the
  queries and seconds it cost, so output-edge methods are charged for the features they use even when a
  later method (or a resumed run) finds them in the cache;
- ``cell``: one per finished (model, task, shots, seed, method label): accuracy, training seconds, wall
  seconds (training + the extraction it needed), model queries, trainable parameters, steps, parameters
  and, for trained input-edge methods, how training went.

Each line is flushed and fsync'ed when written, so an interrupted run resumes and skips what is done.
Reports (:mod:`edgetune.bench.report`) read these lines and nothing else.

**Shared safely.** Lines are only ever appended, never rewritten: several processes (two ``edgetune run -o
DIR``, bench workers) may write one file at once. Every append holds an exclusive ``flock`` on a lock file
beside it (``.results.jsonl.lock``), so lines never interleave; a line torn by a killed writer is cut off (in
place, under the lock) before the next append, and is the only thing ever dropped. Each line carries the
``run`` id of the :class:`ResultsLog` that wrote it, so one invocation's lines can be told apart from another's
running at the same time.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..distributed import is_main
from ..errors import EdgetuneError

RESULTS_NAME = "results.jsonl"


def machine_info() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def cell_key(model: str, task: str, shots: int, seed: int, label: str) -> str:
    return json.dumps([model, task, shots, seed, label])


def record_key(cell: dict[str, Any]) -> str:
    """The :func:`cell_key` of a ``cell`` record."""
    return cell_key(cell["model"], cell["task"], cell["shots"], cell["seed"], cell["method"])


class ResultsLog:
    """Append-only JSONL of bench lines, safe to share between processes; every line is fsync'ed as it is
    written. ``lines`` is what the file held when opened plus what this log wrote since."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.run = uuid.uuid4().hex[:12]
        if self.path.exists() and not self.path.is_file():
            raise EdgetuneError(f"{str(self.path)!r} is not a file; results go to a results.jsonl file")
        with self.locked():
            self.lines = read_results(self.path) if self.path.exists() else []  # refuses a file not of records
            self._cut_torn_line()

    def locked(self) -> Any:
        """Hold the results file's exclusive lock (every writer of this file takes it for each append)."""
        return results_lock(self.path)

    def _cut_torn_line(self) -> None:
        """End the file with a newline before appending (call with the lock held): a last line left incomplete
        by a writer killed mid-write is cut off; a complete one that only lacks its newline gets it."""
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if not size:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            window = min(size, 1 << 22)  # a record is far shorter than 4 MiB
            f.seek(size - window)
            tail = f.read(window)
            cut = tail.rfind(b"\n") + 1
            try:
                json.loads(tail[cut:])
                f.write(b"\n")
            except ValueError:
                f.truncate(size - window + cut)
            f.flush()
            os.fsync(f.fileno())

    def cells(self) -> dict[str, dict[str, Any]]:
        """The latest record of every finished cell, by :func:`cell_key`."""
        return {record_key(c): c for c in self.lines if c.get("type") == "cell"}

    def refresh(self) -> None:
        """Re-read the file (lines other processes appended since this log was opened)."""
        with self.locked():
            self.lines = read_results(self.path) if self.path.exists() else []

    def extraction_seconds(self, model: str, task: str, shots: int, seed: int) -> tuple[float, int] | None:
        for line in reversed(self.lines):
            if line.get("type") == "extraction" and line.get("split") == "train" and (
                    line["model"], line["task"], line["shots"], line["seed"]) == (model, task, shots, seed):
                return float(line["seconds"]), int(line["queries"])
        return None

    def write(self, line: dict[str, Any]) -> None:
        """Append ``line`` (tagged with this run) to the file; under a launcher only rank 0 writes, the others
        keep the line in memory (so every process decides alike)."""
        line = {**line, "run": self.run}
        if not is_main():
            self.lines.append(line)
            return
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        with self.locked():
            self._cut_torn_line()
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        self.lines.append(line)


@contextmanager
def results_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of the results file ``path`` (a ``flock`` on ``.<name>.lock`` beside it): every
    append, and every report written from the file, takes it."""
    path = Path(path)
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise EdgetuneError(f"cannot write results in {str(path.parent)!r}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every line of a results file; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        raise EdgetuneError(f"no bench results at {str(path)!r}")
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise EdgetuneError(f"{path}: not an edgetune results file (not UTF-8 text at byte {exc.start})") from None
    except OSError as exc:
        raise EdgetuneError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    for i, text in enumerate(lines):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise EdgetuneError(f"{path}:{i + 1}: not a JSON line; is it an edgetune results file?") from None
        if not isinstance(line, dict) or not isinstance(line.get("type"), str):
            raise EdgetuneError(f"{path}:{i + 1}: not an edgetune record (a JSON object with a 'type')")
        out.append(line)
    return out
