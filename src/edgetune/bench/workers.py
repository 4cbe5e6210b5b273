"""A bench grid's cells on several local processes (``--workers N``) or as Ray tasks (``--ray [ADDRESS]``).

The unit of work is one sample — (model, task, shots, seed) with every method of the grid on it, in the grid's
order — so the methods of a sample share its extraction as in a serial run, and the record of its train
extraction sits beside the cells that read it. On a model reached through a server (a bench ``backends:`` spec
with ``server`` or ``base_url``) the unit is a whole (model, task): its samples and test subset share prompts, and
two workers asking for the same uncached prompt at once would each pay for it. A worker keeps its models, tasks
and test splits loaded between units; all workers share the run's feature cache (SQLite, safe across processes),
so a prompt one paid for is free to the others. Workers never write records: each unit returns its lines, and the
driver appends them to ``results.jsonl`` once, as units finish (resume, locking and refusal of other settings are
the serial runner's).
Fitted models are saved by the worker that fitted them (each to its own folder).

Why processes and Ray tasks rather than threads: torch holds the GIL through much of a small model's Python
work, and a process (or Ray worker) per share of the cores is what scikit-learn's ``n_jobs`` and Ray Tune do.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import EdgetuneError
from .config import BenchConfig, task_key
from .records import ResultsLog

#: what one worker process keeps between units (models, tasks, test splits, servers it started)
_STATE: dict[str, Any] = {}


class _MemoryLog(ResultsLog):
    """A worker's log: lines kept in memory for the driver to write (``lines`` also holds the results file's
    train-extraction lines from when the run began, for :meth:`extraction_seconds`)."""

    def __init__(self, run: str, lines: list[dict[str, Any]]) -> None:  # no file: nothing to open or lock
        self.run = run
        self.lines = list(lines)
        self.new: list[dict[str, Any]] = []

    def write(self, line: dict[str, Any]) -> None:
        line = {**line, "run": self.run}
        self.lines.append(line)
        self.new.append(line)


def units(todo: list, config: BenchConfig | None = None) -> list[list[tuple[int, tuple]]]:
    """The cells to run, numbered as in a serial run, grouped by sample (model, task, shots, seed) in grid order —
    by (model, task) for a model ``config`` reaches through a server, so no answer is paid for twice."""
    remote = {label for label, spec in (config.backends if config else {}).items()
              if "server" in spec or "base_url" in spec}
    groups: dict[tuple, list[tuple[int, tuple]]] = defaultdict(list)
    for n, cell in enumerate(todo, 1):
        sample = () if cell[0] in remote else (cell[2], cell[3])
        groups[(cell[0], task_key(cell[1]), *sample)].append((n, cell))
    return list(groups.values())


def run_unit(config: BenchConfig, unit: list[tuple[int, tuple]], total: int, run: str, cache_path: str,
             lines: list[dict[str, Any]], save_dir: str | None, save_labels: set[str] | None,
             threads: int | None = None) -> list[dict[str, Any]]:
    """Run one sample's cells in this worker process; the lines a serial run would have written, in order."""
    from .runner import _backend, _LazyCache, _run_one

    if threads is not None and not _STATE.get("threads_set"):
        import torch

        torch.set_num_threads(threads)
        _STATE["threads_set"] = True
    if _STATE.get("cache_path") != cache_path:  # a new run in this (reused) worker: start clean
        close_worker()
        _STATE.update(cache_path=cache_path, cache=_LazyCache(Path(cache_path), None), ready={}, tasks={}, tests={},
                      servers={}, stack=contextlib.ExitStack())
    log = _MemoryLog(run, lines)
    console = Console(stderr=True)
    for n, cell in unit:
        model = cell[0]
        if model not in _STATE["ready"]:
            _STATE["ready"][model] = _backend(config, model, _STATE["cache"], False, _STATE["stack"],
                                              _STATE["servers"])
        _run_one(config, n, total, cell, _STATE["ready"][model], _STATE["tasks"], _STATE["tests"], log, console,
                 False, save_dir, save_labels)
    return log.new


def close_worker() -> None:
    """Stop what this worker started (servers) and close its feature cache."""
    if "stack" in _STATE:
        _STATE["stack"].close()
        _STATE["cache"].close()
    for key in ("cache_path", "cache", "ready", "tasks", "tests", "servers", "stack"):
        _STATE.pop(key, None)


def _lookups(log: ResultsLog) -> list[dict[str, Any]]:
    """What a worker needs of the results file: its train-extraction lines (a cell whose sample's features were paid
    in an earlier run is charged that extraction's seconds per query), not every record, sent to every unit."""
    return [x for x in log.lines if x.get("type") == "extraction" and x.get("split") == "train"]


def _write_all(log: ResultsLog, finished: Iterable[list[dict[str, Any]]]) -> None:
    for lines in finished:
        for line in lines:
            log.write({k: v for k, v in line.items() if k != "run"})


@contextlib.contextmanager
def ray_session(address: str | None, init: Callable[..., Any] | None = None) -> Iterator[Any]:
    """The ``ray`` module, connected to the cluster at ``address`` (``None``: a local instance started here), and
    disconnected after if this call connected it."""
    try:
        import ray
    except ImportError:
        raise EdgetuneError("--ray needs Ray: pip install 'edgetune[ray]'") from None
    started = not ray.is_initialized()
    if started:
        (init or ray.init)(address=address, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_processes(config: BenchConfig, todo: list, log: ResultsLog, cache_path: Path, workers: int,
                  save_dir: str | os.PathLike | None, save_labels: set[str] | None, console: Console) -> None:
    """Run ``todo`` on ``workers`` local processes (spawned: a clean torch in each), each with its share of the
    cores as torch threads; the driver writes every line."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    work = units(todo, config)
    threads = max(1, (os.cpu_count() or 1) // workers)
    console.print(f"{len(work)} samples on {workers} worker processes ({threads} thread(s) each)")
    done_lines = _lookups(log)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_unit, config, unit, len(todo), log.run, str(cache_path), done_lines,
                               None if save_dir is None else str(save_dir), save_labels, threads) for unit in work]
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in finished:
                    if f.exception() is None:
                        _write_all(log, [f.result()])
                failed = [f for f in finished if f.exception() is not None]
                if failed:
                    for f in pending:
                        f.cancel()
                    wait(pending)
                    for f in pending:  # units already running when the first failure came: keep what they did
                        if not f.cancelled() and f.exception() is None:
                            _write_all(log, [f.result()])
                    raise failed[0].exception()  # type: ignore[misc]
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_ray(config: BenchConfig, todo: list, log: ResultsLog, cache_path: Path, address: str | None,
            save_dir: str | os.PathLike | None, save_labels: set[str] | None, console: Console,
            init: Callable[..., Any] | None = None) -> None:
    """Run ``todo`` as Ray tasks (one per sample, one CPU each) on the cluster at ``address`` (``None``: a local Ray
    instance started here and stopped after). The workers must see the same files (task data, feature cache,
    save folder): one machine, or a shared file system."""
    with ray_session(address, init) as ray:
        remote = ray.remote(num_cpus=1)(run_unit)
        work = units(todo, config)
        console.print(f"{len(work)} samples as Ray tasks ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
        done_lines = _lookups(log)
        refs = [remote.remote(config, unit, len(todo), log.run, str(cache_path), done_lines,
                              None if save_dir is None else str(save_dir), save_labels, 1) for unit in work]
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                _write_all(log, [ray.get(ready[0])])
            except ray.exceptions.RayTaskError as exc:
                for ref in pending:
                    ray.cancel(ref)
                cause = exc.as_instanceof_cause()
                raise (cause if isinstance(cause, EdgetuneError) else EdgetuneError(
                    f"a Ray task failed: {str(exc).splitlines()[0]}")) from None


class _Predictor:
    """A Ray Data actor: the saved method with its own backend, built once per actor, labelling batches."""

    def __init__(self, path: str, backend_options: dict[str, Any]) -> None:
        from ..backends import load_backend
        from ..methods.core.persistence import load

        self.method = load(path, model=load_backend(**backend_options))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from ..data.example import Example

        inputs = [Example(str(t), None if b is None or b != b else str(b), extra=json.loads(x))  # NaN: no text_b
                  for t, b, x in zip(batch["text"], batch["text_b"], batch["extra"], strict=True)]
        return {"i": np.asarray(batch["i"]), "proba": np.asarray(self.method.predict_proba(inputs), dtype=np.float64)}


def predict_with_ray(path: str | os.PathLike, backend_options: dict[str, Any], inputs: list[Any],
                     address: str | None = None, batch_size: int = 256, actors: int | None = None,
                     init: Callable[..., Any] | None = None) -> Any:
    """Class probabilities (n, C) of a saved method over ``inputs`` (texts or examples), mapped over batches with
    Ray Data: ``actors`` actors (default: one per CPU of the cluster, at most one per batch), each loading the
    method and its model once (``backend_options``: :func:`~edgetune.backends.load_backend`'s arguments); rows come
    back in input order. ``address``: a running cluster (default: a local Ray instance, stopped after)."""
    import numpy as np

    with ray_session(address, init) as ray:
        rows = [{"i": i, "text": x if isinstance(x, str) else x.text,
                 "text_b": None if isinstance(x, str) else x.text_b,
                 "extra": json.dumps({} if isinstance(x, str) else x.extra)} for i, x in enumerate(inputs)]
        n_batches = -(-len(rows) // batch_size)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = max(1, min(actors or cpus, n_batches))
        ds = ray.data.from_items(rows).map_batches(
            _Predictor, fn_constructor_kwargs={"path": str(path), "backend_options": backend_options},
            batch_size=batch_size, concurrency=size, num_cpus=1, batch_format="numpy")
        out = ds.take_all()
    proba = np.zeros((len(rows), len(out[0]["proba"]) if out else 0))
    for row in out:
        proba[int(row["i"])] = row["proba"]
    return proba
