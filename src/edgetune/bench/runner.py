"""The one runner: every evaluation (``edgetune run``, ``edgetune bench``, the benchmark and GPU scripts)
goes through :func:`run_bench`, which runs cells and writes :mod:`records <edgetune.bench.records>`.

A cell is (model, task, shots, seed, method). Every method of a cell sees the same few-shot sample and
the same seeded test subset. Output-edge methods share one feature extraction per (model, task, shots,
seed) through the feature cache, and are charged the extraction time their queries took; the others
(input edge, SetFit) run their model themselves. What a method costs (trainable parameters, queries,
steps) is read from its :meth:`~edgetune.methods.core.estimator.Method.costs`, never guessed from its name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ..backends import Backend, FeatureCache, load_backend
from ..data.sampling import draw, held_out, size_label, subsample
from ..data.tasks import Task
from ..distributed import barrier, is_main, world
from ..errors import EdgetuneError
from ..methods import get_method
from ..methods.configs import declarations, multi_label_methods
from ..methods.core.output_edge import OutputEdgeMethod
from ..metrics import confusion, multi_label_scores, per_label_counts, scores
from ..paths import safe_name
from .config import BenchConfig, MethodEntry, key_of, task_key
from .records import RESULTS_NAME, ResultsLog, machine_info, read_results


def run_bench(config: BenchConfig, output: str | os.PathLike | None = None, progress: bool = True,
              console: Console | None = None, *, backends: Mapping[str, Backend] | None = None,
              cache: FeatureCache | None = None, save_dir: str | os.PathLike | None = None,
              save_labels: set[str] | None = None, fresh: bool = False, run_id: str | None = None,
              workers: int = 1, ray: bool = False, ray_address: str | None = None) -> Path:
    """Run every cell of ``config`` not already in the results file; return the results path.

    Records are only ever appended: a cell already recorded with the same settings is skipped (resume); one
    recorded with other settings (parameters, test size) stops the run with one line before anything runs,
    since a report cannot tell the two apart. ``backends`` maps a model name to a ready backend (e.g. a remote
    one); others are loaded by name. ``cache`` is the feature cache for backends loaded here (default:
    ``features.sqlite`` next to the results, made only when a backend is loaded here). ``save_dir``: save each
    fitted method (those labelled in ``save_labels``; all when ``None``) as
    ``<task>-<label>-<shots>shot-seed<seed>`` (names made safe for a file name); a folder already there is
    never replaced: the run stops before training. ``fresh``: start a new results file, the old one moved
    aside (``results.jsonl.replaced-<time>``), never deleted. ``run_id`` tags this invocation's lines.
    ``workers``: run the samples on that many local processes; ``ray``: as Ray tasks on the cluster at
    ``ray_address`` (default: a local Ray instance) — see :mod:`edgetune.bench.workers`; either way only this
    process writes records.
    """
    if workers < 1:
        raise EdgetuneError(f"workers is a whole number ≥ 1, not {workers!r}")
    parallel = ray or workers > 1
    if parallel and world()[1] > 1:
        raise EdgetuneError("under torchrun / accelerate launch the processes are the launcher's: run without "
                            "--workers/--ray")
    if not is_main():  # under a launcher: rank 0 speaks for all
        console, progress = Console(stderr=True, quiet=True), False
    if parallel and backends:
        raise EdgetuneError("backends built in this process cannot be handed to worker processes; name them in "
                            "the config's backends: instead, or run without --workers/--ray")
    if parallel and cache is not None and cache.path is None:
        raise EdgetuneError("an in-memory feature cache cannot be shared with worker processes; give a file")
    console = console or Console(stderr=True)
    path = config.output_dir(output) / RESULTS_NAME
    if fresh and path.exists() and is_main():
        aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        console.print(f"earlier results moved to {aside}")
    barrier()  # under a launcher: every process plans from the same file (rank 0 writes to it from here on)
    existed = path.exists()
    log, todo = _plan(config, output, save_dir, save_labels)
    barrier()
    if run_id:
        log.run = run_id
    cells = config.cells()
    log.write({"type": "header", "config": config.to_dict(), "machine": machine_info(), "time": time.time(),
               "cells": len(cells), "already_done": len(cells) - len(todo)})
    if not todo:
        console.print(f"{config.name}: all {len(cells)} cells are done ({log.path})")
        return log.path
    console.print(f"{config.name}: {len(todo)} cells to run, {len(cells) - len(todo)} already done")
    own = cache is None
    cold = tempfile.mkdtemp(prefix="edgetune-cold-") if own and config.cache == "cold" else None
    lazy = _LazyCache(Path(cold or path.parent) / "features.sqlite", cache)
    try:
        shared = cache.path if cache is not None else lazy.path  # the file worker processes open
        if ray:
            from .workers import run_ray

            run_ray(config, todo, log, shared, ray_address, save_dir, save_labels, console)  # type: ignore[arg-type]
        elif workers > 1:
            from .workers import run_processes

            run_processes(config, todo, log, shared, workers, save_dir, save_labels, console)  # type: ignore[arg-type]
        else:
            _run_cells(config, todo, log, console, progress, dict(backends or {}), lazy, save_dir, save_labels)
    except BaseException:
        if is_main() and not existed and not any(x.get("type") == "cell" for x in log.lines):
            with log.locked():  # nothing finished: leave no header-only file behind (unless another run wrote)
                lines = read_results(path) if path.exists() else []
                if all(x.get("run") == log.run for x in lines):
                    path.unlink(missing_ok=True)
        raise
    finally:
        if own:
            lazy.close()
        if cold is not None:  # a cold run's own cache: nothing anyone paid for outside this run
            shutil.rmtree(cold, ignore_errors=True)
    return log.path


def check_run(config: BenchConfig, output: str | os.PathLike | None = None,
              save_dir: str | os.PathLike | None = None, save_labels: set[str] | None = None) -> int:
    """Everything :func:`run_bench` refuses before it runs, checked without writing or loading a model: the
    output folder, cells recorded there with other settings, the task data, the save folder. Returns the
    number of cells still to run."""
    return len(_plan(config, output, save_dir, save_labels)[1])


def _plan(config: BenchConfig, output: str | os.PathLike | None, save_dir: str | os.PathLike | None,
          save_labels: set[str] | None) -> tuple[ResultsLog, list]:
    out_dir = config.output_dir(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgetuneError(f"output {str(out_dir)!r} is a file; give a folder (results.jsonl and report.md go "
                            "into it)")
    path = out_dir / RESULTS_NAME
    log = ResultsLog(path)
    recorded = log.cells()
    cells = config.cells()
    conflicts = [(c, recorded[k]) for c in cells if (k := key_of(c)) in recorded and not _same_spec(config, c,
                                                                                                    recorded[k])]
    if conflicts:
        (model, task, shots, seed, entry), old = conflicts[0]
        then, now = old.get("spec") or {}, _spec(config, entry)
        given = {*(then.get("params") or {}), *(now.get("params") or {})}
        moved = _moved_defaults(then, now)
        settings = (", ".join(f"default {k} was {a!r}, now {b!r}" for k, (a, b) in sorted(moved.items()))
                    if moved and not given & set(moved) else f"{_describe(old)}; now {_describe_entry(config, entry)}")
        raise EdgetuneError(
            f"{path} already holds {entry.label} on {task_key(task)} ({model}, {shots}-shot, seed {seed}) run with "
            f"other settings ({settings}); {len(conflicts)} cell(s) differ. Records are never replaced: write to "
            "another folder (-o), give the method another label, or name the old value in the config's params")
    saving = save_dir is not None
    names = {task_key(t): config.load_task(t).name for t in config.tasks} if saving else {}
    wanted = {id(c): Path(save_dir) / save_name(names[task_key(c[1])], c[4].label, c[2], c[3])  # type: ignore[arg-type]
              for c in cells if saving and (save_labels is None or c[4].label in save_labels)}
    # a recorded cell is done unless it was asked to be saved and its saved model is not there (run it again)
    todo = [c for c in cells if key_of(c) not in recorded or (id(c) in wanted and not wanted[id(c)].exists())]
    specs = {task_key(c[1]): c[1] for c in todo}
    for t in specs.values():  # fail on missing data before loading any model or writing anything
        task = config.load_task(t)
        task.split_path("train")
        if not config.heldout:  # a held-out eval never reads the test split
            task.split_path("test")
        if task.multi_label:  # a method that fits one label per text, asked to fit several: one line, now
            single = sorted({c[4].name for c in todo if task_key(c[1]) == task_key(t)
                             and not declarations()[c[4].name].multi_label})
            if single:
                raise EdgetuneError(f"task {task.name!r} is multi-label (several labels per text); {', '.join(single)} "
                                    f"fit(s) one label per text. Methods that fit multi-label data: "
                                    f"{', '.join(multi_label_methods())}")
    if saving:
        _check_save_dir(Path(save_dir), [wanted[id(c)] for c in todo if id(c) in wanted])  # type: ignore[arg-type]
    return log, todo


class _LazyCache:
    """The feature cache of backends loaded by the runner, opened on first use (a run whose backends are all
    given leaves no empty ``features.sqlite`` behind)."""

    def __init__(self, path: Path, given: FeatureCache | None) -> None:
        self.path, self._cache = path, given

    def get(self) -> FeatureCache:
        if self._cache is None:
            self._cache = FeatureCache(self.path)
        return self._cache

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def few_shot_sample(config: BenchConfig, task: Task, rest: Any, shots: int, seed: int) -> Any:
    """The sample a cell trains on: drawn from the task's train split, or from ``rest`` (what a held-out eval left
    of the train pool, see :func:`_eval_split`) when there is one."""
    return task.sample(shots, seed, how=config.sample) if rest is None else draw(rest, shots, seed, config.sample)


def _eval_split(config: BenchConfig, task: Task) -> tuple[Any, int, Any]:
    """What a task's cells are scored on, the size of the split it comes from, and the pool the few-shot samples
    are drawn from (``None``: the task's train split). On the test split: a seeded subset of ``test_size``. Held
    out: ``per_class`` examples per class drawn from the train pool with the config's seed; the samples then come
    from the rest of the pool, so no sample ever holds a validation example, and the test split is never read."""
    if config.heldout:
        pool = task.load("train")
        val, rest = held_out(pool, config.eval["per_class"], config.eval["seed"])
        return val, len(pool), rest
    full = task.load("test")
    limit = config.test_size
    return (subsample(full, limit, 0) if limit is not None and limit < len(full) else full), len(full), None


def _spec(config: BenchConfig, entry: MethodEntry) -> dict[str, Any]:
    """What, beside the cell's key, decides a cell's result: the method, its given parameters, the test size (or
    the held-out split), and the declared defaults of the parameters it leaves unset."""
    spec = {"name": entry.name, "params": _plain(entry.params), "test_size": config.test_size}
    if config.sample != "per_class":
        spec["sample"] = config.sample
    if defaults := _defaults(entry):
        spec["defaults"] = defaults
    return {**spec, "eval": config.eval} if config.eval != {"split": "test"} else spec


def _defaults(entry: MethodEntry) -> dict[str, Any]:
    """The declared defaults of the parameters ``entry`` leaves unset (the seed aside): recorded with each cell, so
    that a record says what ran and a resumed study notices a default that moved since its cells ran."""
    config = declarations().get(entry.name)
    if config is None:
        return {}
    given = set(_renamed(entry.name, entry.params))
    unset = {k: v for k, v in config.defaults().items() if k not in given and k != "seed"}
    return json.loads(json.dumps(_plain(unset)))  # a tuple default (DecT's epochs) is recorded as its list


def _moved_defaults(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Parameters whose value as run (given, else its recorded default) differs between two specs that both record
    defaults: name -> (then, now). A parameter added or removed since is not a move; records written before
    defaults were kept have none."""
    if "defaults" not in recorded or "defaults" not in now:
        return {}
    then = {**recorded["defaults"], **(recorded.get("params") or {})}
    today = {**now["defaults"], **(now.get("params") or {})}
    moved = {k: (then[k], today[k]) for k in then.keys() & today.keys() if then[k] != today[k] and k != "seed"}
    return moved | {k: (None, v) for k, v in (now.get("params") or {}).items() if k not in then and k != "seed"}


def _renamed(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Recorded parameters under today's names (a record written under a deprecated spelling is the same cell)."""
    config = declarations().get(name)
    return dict(params) if config is None else config.renamed(params, warn=False)


def _same_spec(config: BenchConfig, cell: tuple, record: Mapping[str, Any]) -> bool:
    entry = cell[4]
    if "spec" in record:
        spec = dict(record["spec"])
        spec["params"] = _renamed(str(spec.get("name")), spec.get("params") or {})
        now = json.loads(json.dumps(_spec(config, entry)))
        if "defaults" in spec and "defaults" in now:  # compare the values as run, given or by default
            if _moved_defaults(spec, now):
                return False
            spec.pop("params")
            now.pop("params")
        spec.pop("defaults", None)
        now.pop("defaults", None)
        return spec == now
    # records written before specs were kept: the method and its parameters (the run's seed aside)
    old = {k: v for k, v in _renamed(entry.name, record.get("params") or {}).items() if k != "seed"}
    now = {k: v for k, v in json.loads(json.dumps(_plain(entry.params))).items() if k != "seed"}
    return record.get("name", entry.name) == entry.name and old == now


def _describe(record: Mapping[str, Any]) -> str:
    spec = record.get("spec") or {"name": record.get("name"), "params": {
        k: v for k, v in (record.get("params") or {}).items() if k != "seed"}}
    return _show(spec)


def _describe_entry(config: BenchConfig, entry: MethodEntry) -> str:
    return _show(_spec(config, entry))


def _show(spec: Mapping[str, Any]) -> str:
    parts = [str(spec.get("name"))] + [f"{k}={v}" for k, v in sorted((spec.get("params") or {}).items())]
    if "test_size" in spec:
        parts.append(f"test size {spec['test_size'] or 'all'}")
    return " ".join(parts)


def save_name(task: str, label: str, shots: int, seed: int) -> str:
    """The folder name a saved cell gets: ``<task>-<label>-<shots>shot-seed<seed>``, with the names from data
    made safe for a file name (never a path)."""
    return f"{safe_name(task)}-{safe_name(label)}-{shots}shot-seed{seed}"


def _check_save_dir(save_dir: Path, targets: list[Path]) -> None:
    """Refuse, before anything is trained, a save folder that is a file or already holds a folder a cell of
    this run would save to (a saved model is never replaced)."""
    if save_dir.exists() and not save_dir.is_dir():
        raise EdgetuneError(f"--save-dir {str(save_dir)!r} is a file; give a folder")
    taken = [t for t in targets if t.exists()]
    if taken:
        raise EdgetuneError(f"{str(taken[0])!r} already exists ({len(taken)} of this run's saved models would "
                            "replace earlier ones); saved models are never replaced: choose another --save-dir or "
                            "move them away")


def _run_cells(config: BenchConfig, todo: list, log: ResultsLog, console: Console, progress: bool,
               ready: dict[str, Backend], cache: _LazyCache, save_dir: str | os.PathLike | None,
               save_labels: set[str] | None) -> None:
    tasks: dict[str, Task] = {}
    tests: dict[tuple[str, str], Any] = {}
    with contextlib.ExitStack() as stack:
        servers: dict[str, Any] = {}
        for n, cell in enumerate(todo, 1):
            model = cell[0]
            if model not in ready:
                ready[model] = _backend(config, model, cache, progress, stack, servers)
            _run_one(config, n, len(todo), cell, ready[model], tasks, tests, log, console, progress, save_dir,
                     save_labels)


def _backend(config: BenchConfig, model: str, cache: _LazyCache, progress: bool, stack: contextlib.ExitStack,
             servers: dict[str, Any]) -> Backend:
    """The backend a cell's model label names: a spec of the config's ``backends`` (a server it starts, one running,
    or an in-process model with options), else a model loaded by name."""
    spec = config.backends.get(model)
    if spec is None:
        return load_backend(model, cache=cache.get(), progress=progress)
    options = {k: v for k, v in spec.items() if k not in ("model", "server", "base_url", "api_key_env")}
    base_url = spec.get("base_url")
    if "server" in spec:  # one server per model and settings, stopped when the run ends
        from ..backends.server import LlamaServer

        key = json.dumps([spec["model"], spec["server"]], sort_keys=True)
        if key not in servers:
            servers[key] = stack.enter_context(LlamaServer(spec["model"], **spec["server"]))
        base_url = servers[key].base_url
        # llama-cpp-python answers one request at a time: more in flight only contend (server_speed.md: 2.67
        # prompts/s at concurrency 1, 1.75 at 4)
        options.setdefault("concurrency", 1)
    if "api_key_env" in spec:
        key_value = os.environ.get(spec["api_key_env"])
        if not key_value:
            raise EdgetuneError(f"backend {model!r}: environment variable {spec['api_key_env']} is not set")
        options["api_key"] = key_value
    if base_url is not None:
        options.update(base_url=base_url, kind="openai")
    return load_backend(spec["model"], cache=cache.get(), progress=progress, **options)


def _run_one(config: BenchConfig, n: int, total: int, cell: tuple, backend: Backend, tasks: dict[str, Task],
             tests: dict[tuple[str, str], Any], log: ResultsLog, console: Console, progress: bool,
             save_dir: str | os.PathLike | None, save_labels: set[str] | None) -> None:
    model, task_spec, shots, seed, entry = cell
    key = task_key(task_spec)
    task = tasks.setdefault(key, config.load_task(task_spec))
    if (model, key) not in tests:
        tests[(model, key)] = _eval_split(config, task)
    test, pool, rest = tests[(model, key)]
    train = few_shot_sample(config, task, rest, shots, seed)
    console.print(f"[{n}/{total}] {model} · {task.name} · {size_label(shots, config.sample)} · seed {seed} · "
                  f"{entry.label}")
    method, row = run_cell(backend, task, train, test, entry, seed, log, progress,
                           at_checks=config.eval.get("at_checks", False), model=model)
    suffix = ("-val" if config.heldout else "") + ("-natural" if config.sample == "natural" else "")
    row.update(type="cell", model=model, task=key, task_name=task.name + suffix, sample=config.sample,
               shots=shots, seed=seed,
               method=entry.label, name=entry.name, model_identity=backend.identity, backend=backend.kind,
               n_train=len(train), n_test=len(test), n_test_pool=pool, time=time.time(),
               spec=_spec(config, entry), **({"short_labels": list(train.short)} if train.short else {}))
    log.write(row)
    if "choice" in row:
        console.print(row["choice"]["summary"])
    if save_dir is not None and (save_labels is None or entry.label in save_labels):
        target = Path(save_dir) / save_name(task.name, entry.label, shots, seed)
        if target.exists():  # made since the check before training (another run): keep both
            target = target.with_name(f"{target.name}-{log.run}")
            console.print(f"{target.name[: -len(log.run) - 1]} appeared meanwhile; saving to {target}")
        if is_main():  # under a launcher every process holds the same model; rank 0 saves it
            method.save(target)


def run_cell(backend: Backend, task: Task, train: Any, test: Any, entry: MethodEntry, seed: int,
             log: ResultsLog, progress: bool, at_checks: bool = False,
             model: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Fit one method on one sample and score it on ``test``; the fitted method and its record. ``at_checks``:
    a gradient-trained method also scores ``test`` at each of its dev checks (the trainer's ``on_check``).
    ``model``: the cell's model label, which extraction records carry (default: the backend's name)."""
    cls = get_method(entry.name)
    params = dict(entry.params)
    accepted = cls.param_names()
    if "seed" in accepted:
        params.setdefault("seed", seed)
    if "progress" in accepted:
        params.setdefault("progress", progress)
    y_test = test.indicator() if test.multi_label else np.array(test.label_ids())
    method = cls(model=backend, **params)
    if isinstance(method, OutputEdgeMethod):  # the method's own fit, in its two halves: extraction, then decoder
        model_name = model or backend.name
        prepared = method.prepare(train)
        if prepared.queries:
            log.write({"type": "extraction", "split": "train", "model": model_name, "task": task.name,
                       "shots": train.shots, "seed": seed, "queries": prepared.queries, "seconds": prepared.seconds,
                       "stats": prepared.stats()})
        with CpuShare() as share:
            method.fit_prepared(**vars(prepared))
        fit_s = share.seconds
        test_feats = method.features(test, f"{task.name} test")
        if test_feats.queries:
            log.write({"type": "extraction", "split": "test", "model": model_name, "task": task.name,
                       "queries": test_feats.queries, "seconds": test_feats.seconds, "stats": test_feats.stats})
        known = log.extraction_seconds(model_name, task.name, train.shots, seed)
        # seconds per training query, from the latest extraction record of this sample (nan: paid in a run that
        # left no record); a method is charged that times the queries it reads
        per_query = known[0] / known[1] if known and known[1] else float("nan")
        extraction_s = per_query * (len(prepared.train) + len(prepared.content_free)) * len(prepared.template)
        measures = _measures(y_test, method.decision_features(test_feats), method.labels_, method)
        costs = method.costs()
        charged = per_query * costs.queries
        return method, {"edge": method.edge, **measures, "fit_seconds": fit_s,
                        "extraction_seconds": extraction_s, "wall_seconds": fit_s + charged,
                        "queries": costs.queries, "trainable_params": costs.trainable_params, "steps": costs.steps,
                        "params": _plain(params), "cpu_share": share.share}
    at_check: list[float] = []
    if at_checks and hasattr(method, "on_check"):
        def score(step: int, info: dict[str, Any]) -> None:  # the weights just checked on dev are in place
            at_check.append(float((np.asarray(method.class_scores(list(test))).argmax(axis=1) == y_test).mean()))

        method.on_check = score
    with CpuShare() as share, PeakMemory() as memory:
        method.fit(train)
    fit_s = share.seconds
    measures = _measures(y_test, method.class_scores(list(test)), method.labels_, method)
    costs = method.costs()
    row = {"edge": method.edge, **measures, "fit_seconds": fit_s, "wall_seconds": fit_s,
           "queries": costs.queries, "trainable_params": costs.trainable_params, "steps": costs.steps,
           "params": _plain(params), "peak_memory_mb": memory.peak_mb, "memory_measure": memory.measure,
           "cpu_share": share.share}
    if hasattr(method, "choice_") and hasattr(method, "cv_results_"):  # auto: what it chose and its table
        row["choice"] = {"chosen": method.choice_, "summary": method.summary(), "cv": method.cv_results_}
    history = getattr(method, "history_", None)
    if history and "loss" in history:
        row["training"] = training_summary(history, getattr(method, "dev_size_", None), at_check or None)
    return method, row


def _measures(y_test: np.ndarray, class_scores: Any, labels: Any, method: Any = None) -> dict[str, Any]:
    """A cell's measures (:mod:`edgetune.metrics`: accuracy, macro-F1, balanced accuracy), its confusion matrix
    and the labels naming its rows. Multi-label (``y_test`` an (n, C) 0/1 matrix): micro-, macro- and samples-F1,
    subset accuracy (also as ``accuracy``, scikit-learn's meaning), per-label true/false positives and false
    negatives, labels predicted per text, and the method's threshold."""
    if y_test.ndim == 2:
        decided = method.decide_scores(class_scores)
        measures = multi_label_scores(y_test, decided)
        return {"multi_label": True, "accuracy": measures["subset_accuracy"], **measures,
                "per_label": per_label_counts(y_test, decided), "labels": list(labels),
                "labels_per_text": float(decided.sum(axis=1).mean()),
                "threshold": float(np.mean(method.thresholds_))}
    predicted, n = np.asarray(class_scores).argmax(axis=1), len(labels)
    return {**scores(y_test, predicted, n), "confusion": confusion(y_test, predicted, n), "labels": list(labels)}


class CpuShare:
    """Wall seconds of a block of code and the share of its threads' time the CPUs gave it: process CPU seconds
    / (wall seconds × torch's thread count). About 1 when it ran alone; well below when other work shared the
    cores (its wall time is then inflated, not comparable) — or on a GPU, where the CPU mostly waits, or for
    work that keeps fewer threads busy than torch has (small decoders): compare a method's runs with each other."""

    def __enter__(self) -> CpuShare:
        import torch

        self._threads = max(1, torch.get_num_threads())
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        self.share = round(cpu / (self.seconds * self._threads), 3) if self.seconds > 0 else None


class PeakMemory:
    """The most memory a block of code held above what was in use when it started, in MB.

    On a GPU: the CUDA allocator's peak (``torch.cuda.max_memory_allocated``, reset at the start). On a CPU:
    the bytes the C heap has handed out and not taken back (glibc's ``mallinfo2``: torch's CPU tensors come
    from it), sampled every 20 ms by a thread — unlike the process's resident set, this does not hide a run's
    needs behind memory an earlier run freed but the allocator kept; where ``mallinfo2`` is missing (not
    glibc), the resident set. A spike shorter than 20 ms can be missed. ``measure`` says which it was."""

    def __enter__(self) -> PeakMemory:
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            self.measure = "cuda allocated"
            return self
        import threading

        read, self.measure = _heap_in_use()
        self._start = self._top = read()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.02):
                self._top = max(self._top, read())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            top = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            top = self._top
        self.peak_mb = max(0.0, (top - self._start) / 2**20)


def _heap_in_use() -> tuple[Any, str]:
    """A function reading the bytes in use on the C heap (glibc ``mallinfo2``), else the resident set."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        import psutil

        proc = psutil.Process()
        return (lambda: proc.memory_info().rss), "process RSS"

    def read() -> int:
        info = libc.mallinfo2()
        return int(info.uordblks + info.hblkhd)  # small blocks in use + mmap'ed (large) blocks

    return read, "heap in use (mallinfo2)"


def training_summary(history: Mapping[str, Any], n_dev: int | None = None,
                     at_checks: list[float] | None = None) -> dict[str, Any]:
    """The parts of a trained method's ``history_`` that say whether training converged: first and final training
    loss, the dev curve, and for gradient training the mean training loss since the previous check
    (``loss_per_check``, one per check after the start), the dev split's size and, when the eval split was scored
    at each check, ``eval_accuracy`` (one per check, in the dev curve's order)."""
    loss = [float(v) for v in history.get("loss", [])]
    out: dict[str, Any] = {"final_loss": float(np.mean(loss[-10:])) if loss else None,
                           "first_loss": loss[0] if loss else None,
                           "dev_accuracy": [list(map(float, p)) for p in history.get("dev_accuracy", [])]}
    if history.get("dev_loss"):
        out["dev_loss"] = [list(map(float, p)) for p in history["dev_loss"]]
        steps = [int(s) for s, _ in history["dev_loss"] if s > 0]
        out["loss_per_check"] = [float(np.mean(loss[a:b])) if loss[a:b] else None
                                 for a, b in zip([0, *steps], steps, strict=False)]
    if n_dev:
        out["n_dev"] = int(n_dev)
    if at_checks:
        out["eval_accuracy"] = at_checks
    for key in ("best_step", "best_call", "best_dev_accuracy", "best_dev_loss", "select_by", "best_train_loss",
                "offset_ratio", "lr", "stopped", "rollbacks", "param_parts"):
        if key in history:
            out[key] = history[key]
    return out


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a record can hold (JSON values; a tuple, e.g. DecT's candidate ``epochs`` given from Python,
    as its list, which is how YAML and ``--params`` give it), without the progress switch."""
    out = {}
    for k, v in params.items():
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, str | int | float | bool | list | type(None)) and k != "progress":
            out[k] = v
    return out
