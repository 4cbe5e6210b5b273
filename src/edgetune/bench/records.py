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
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

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


class ResultsLog:
    """Append-only JSONL of bench lines; every line is fsync'ed as it is written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):  # a line torn by a kill mid-write: drop it before appending
                tmp = self.path.with_name(f".{self.path.name}.tmp")
                tmp.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
                os.replace(tmp, self.path)
        self.lines = read_results(self.path) if self.path.exists() else []

    def done(self) -> set[str]:
        return {cell_key(c["model"], c["task"], c["shots"], c["seed"], c["method"])
                for c in self.lines if c.get("type") == "cell"}

    def extraction_seconds(self, model: str, task: str, shots: int, seed: int) -> tuple[float, int] | None:
        for line in reversed(self.lines):
            if line.get("type") == "extraction" and line.get("split") == "train" and (
                    line["model"], line["task"], line["shots"], line["seed"]) == (model, task, shots, seed):
                return float(line["seconds"]), int(line["queries"])
        return None

    def write(self, line: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.lines.append(line)


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every line of a results file; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        raise EdgetuneError(f"no bench results at {str(path)!r}")
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, text in enumerate(lines):
        if not text.strip():
            continue
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise EdgetuneError(f"{path}:{i + 1}: not a JSON line") from None
    return out


