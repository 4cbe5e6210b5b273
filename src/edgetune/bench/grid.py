"""``edgetune bench``: a grid of tasks x methods x shots x seeds x models, resumable, one JSONL line per cell.

The results file (``results.jsonl`` in the output folder) is the only source of every report:

- one ``header`` line per bench invocation (config, machine, time);
- one ``extraction`` line whenever training prompts (or a test set) were really sent to a model, with
  the queries and seconds it cost, so output-edge methods are charged for the features they use even
  when a later method (or a resumed run) finds them in the cache;
- one ``cell`` line per finished (model, task, shots, seed, method): accuracy, training seconds, wall
  seconds (training + the extraction it needed), model queries, trainable parameters, steps.

Each line is flushed and fsync'ed when written, so an interrupted bench resumes and skips what is done.
Output-edge methods share one feature cache per bench (``features.sqlite`` next to the results).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console

from ..backends import Backend, FeatureCache, load_backend
from ..data.tasks import Task, load_task
from ..data.templates import Template
from ..errors import DataError, EdgetuneError
from ..methods.base import OutputEdgeMethod, content_free_examples, get_method
from .experiment import (
    count_params,
    fit_and_score,
    fit_and_score_features,
    machine_info,
    output_edge_queries,
    training_queries,
)

RESULTS_NAME = "results.jsonl"


@dataclass(frozen=True)
class MethodEntry:
    """One method of the grid: a registry name, a label for reports, parameters and optionally its own
    model(s) (e.g. SetFit on an encoder while the others use the default causal LM)."""

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any]) -> MethodEntry:
        if isinstance(spec, str):
            get_method(spec)
            return cls(spec, spec)
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise DataError(f"a method entry is a name or a mapping with 'name': {spec!r}")
        unknown = set(spec) - {"name", "label", "params", "model", "models"}
        if unknown:
            raise DataError(f"method entry {spec['name']!r}: unknown key(s) {sorted(unknown)}")
        method = get_method(spec["name"])
        params = dict(spec.get("params") or {})
        bad = set(params) - set(method.param_names())
        if bad:
            raise DataError(f"method {spec['name']!r} has no parameter(s) {sorted(bad)}; it takes "
                            f"{', '.join(method.param_names())}")
        models = spec.get("models", spec.get("model"))
        if isinstance(models, str):
            models = [models]
        return cls(spec["name"], str(spec.get("label", spec["name"])), params,
                   tuple(models) if models else None)


@dataclass
class BenchConfig:
    """What ``edgetune bench CONFIG.yaml`` runs (see ``benchmarks/*.yaml`` for examples)."""

    name: str
    tasks: list[str]
    methods: list[MethodEntry]
    models: list[str] = field(default_factory=lambda: ["smollm2-135m"])
    shots: list[int] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    test_size: int | None = 200
    output: str | None = None
    data_dir: str | None = None
    order: str = "task-first"  # method-first: every cell of the first method, then the next (cheap ones first)
    base: Path = field(default_factory=Path.cwd)  # folder relative task files and outputs resolve from

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> BenchConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError(f"cannot read bench config {str(path)!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: malformed YAML ({exc})") from None
        if not isinstance(raw, Mapping):
            raise DataError(f"{path}: a bench config is a mapping with tasks, methods, ...")
        return cls.from_dict(raw, base=path.parent, default_name=path.stem)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base: Path | None = None, default_name: str = "bench") -> BenchConfig:
        known = {"name", "tasks", "methods", "models", "shots", "seeds", "test_size", "output", "data_dir", "order"}
        unknown = set(raw) - known
        if unknown:
            raise DataError(f"bench config: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        for key in ("tasks", "methods"):
            if not raw.get(key):
                raise DataError(f"bench config: '{key}' must list at least one entry")

        def listed(key: str, default: list) -> list:
            value = raw.get(key, default)
            return list(value) if isinstance(value, list | tuple) else [value]

        order = str(raw.get("order", "task-first"))
        if order not in ("task-first", "method-first"):
            raise DataError(f"bench config: order is task-first or method-first, not {order!r}")
        return cls(name=str(raw.get("name", default_name)), order=order, tasks=[str(t) for t in listed("tasks", [])],
                   methods=[MethodEntry.parse(m) for m in listed("methods", [])],
                   models=[str(m) for m in listed("models", ["smollm2-135m"])],
                   shots=[int(s) for s in listed("shots", [16])], seeds=[int(s) for s in listed("seeds", [0, 1, 2])],
                   test_size=raw.get("test_size", 200), output=raw.get("output"), data_dir=raw.get("data_dir"),
                   base=base or Path.cwd())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "order": self.order, "tasks": self.tasks, "models": self.models, "shots": self.shots,
                "seeds": self.seeds, "test_size": self.test_size,
                "methods": [{"name": m.name, "label": m.label, "params": m.params,
                             "models": list(m.models) if m.models else None} for m in self.methods]}

    def load_task(self, spec: str) -> Task:
        path = Path(spec)
        if spec.endswith((".yaml", ".yml", ".json")) and not path.is_absolute() and not path.exists():
            path = self.base / path
            spec = str(path)
        return load_task(spec, self.data_dir)

    def output_dir(self, override: str | os.PathLike | None = None) -> Path:
        if override is not None:
            return Path(override)
        if self.output is None:
            return Path("results") / "bench" / self.name
        out = Path(self.output)
        return out if out.is_absolute() else Path.cwd() / out

    def cells(self) -> list[tuple[str, str, int, int, MethodEntry]]:
        """Every (model, task, shots, seed, method) the grid holds, in run order."""
        out = []
        models = list(dict.fromkeys(self.models + [m for e in self.methods for m in (e.models or ())]))
        for model in models:
            for task in self.tasks:
                for shots in self.shots:
                    for seed in self.seeds:
                        for entry in self.methods:
                            if model in (entry.models or self.models):
                                out.append((model, task, shots, seed, entry))
        if self.order == "method-first":  # stable: within a method, the task-first order
            rank = {id(e): i for i, e in enumerate(self.methods)}
            out.sort(key=lambda c: rank[id(c[4])])
        return out


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


def run_bench(config: BenchConfig, output: str | os.PathLike | None = None, progress: bool = True,
              console: Console | None = None) -> Path:
    """Run every cell of ``config`` not already in the results file; return the results path."""
    console = console or Console(stderr=True)
    out_dir = config.output_dir(output)
    log = ResultsLog(out_dir / RESULTS_NAME)
    done = log.done()
    todo = [c for c in config.cells() if cell_key(c[0], c[1], c[2], c[3], c[4].label) not in done]
    log.write({"type": "header", "config": config.to_dict(), "machine": machine_info(), "time": time.time(),
               "cells": len(config.cells()), "already_done": len(config.cells()) - len(todo)})
    if not todo:
        console.print(f"bench {config.name}: all {len(done)} cells are done ({log.path})")
        return log.path
    console.print(f"bench {config.name}: {len(todo)} cells to run, {len(config.cells()) - len(todo)} already done")
    for t in dict.fromkeys(c[1] for c in todo):  # fail on missing data before loading any model
        task = config.load_task(t)
        task.split_path("train")
        task.split_path("test")
    cache = FeatureCache(out_dir / "features.sqlite")
    backends: dict[str, Backend] = {}
    tasks: dict[str, Task] = {}
    tests: dict[tuple[str, str], Any] = {}
    for n, (model, task_spec, shots, seed, entry) in enumerate(todo, 1):
        if model not in backends:
            backends[model] = load_backend(model, cache=cache, progress=progress)
        backend = backends[model]
        task = tasks.setdefault(task_spec, config.load_task(task_spec))
        if (model, task_spec) not in tests:
            tests[(model, task_spec)] = task.load("test", limit=config.test_size, seed=0)
        test = tests[(model, task_spec)]
        train = task.sample(shots, seed)
        console.print(f"[{n}/{len(todo)}] {model} · {task.name} · {shots}-shot · seed {seed} · {entry.label}")
        row = _run_cell(backend, task, train, test, entry, seed, log, progress)
        row.update(type="cell", model=model, task=task_spec, task_name=task.name, shots=shots, seed=seed,
                   method=entry.label, name=entry.name, model_identity=backend.identity, backend=backend.kind,
                   n_train=len(train), n_test=len(test), time=time.time())
        log.write(row)
    return log.path


def _run_cell(backend: Backend, task: Task, train: Any, test: Any, entry: MethodEntry, seed: int,
              log: ResultsLog, progress: bool) -> dict[str, Any]:
    cls = get_method(entry.name)
    params = dict(entry.params)
    if "seed" in cls.param_names():
        params.setdefault("seed", seed)
    if "progress" in cls.param_names():
        params.setdefault("progress", progress)
    y_test = np.array(test.label_ids())
    method = cls(model=backend, **params)
    if isinstance(method, OutputEdgeMethod):
        template = Template(task.template)
        model_name = backend.name
        test_feats = backend.features(test, template, task.words, f"{task.name} test")
        if test_feats.queries:
            log.write({"type": "extraction", "split": "test", "model": model_name, "task": task.name,
                       "queries": test_feats.queries, "seconds": test_feats.seconds, "stats": test_feats.stats})
        cf = backend.features(content_free_examples(template), template, task.words, "content-free")
        feats = backend.features(train, template, task.words, f"{task.name} {train.shots}-shot seed {seed}")
        paid = feats.queries + cf.queries
        if paid:
            log.write({"type": "extraction", "split": "train", "model": model_name, "task": task.name,
                       "shots": train.shots, "seed": seed, "queries": paid, "seconds": feats.seconds + cf.seconds,
                       "stats": feats.stats})
        known = log.extraction_seconds(model_name, task.name, train.shots, seed)
        extraction_s = known[0] if known else float("nan")  # nan: paid in a run that left no record
        accuracy, fit_s = fit_and_score_features(method, task, template, feats, np.array(train.label_ids()), cf,
                                                 test_feats, y_test)
        # charged the share of the extraction time that its queries took
        uses = output_edge_queries(entry.name, len(train), len(cf))
        charged = extraction_s * uses / (len(train) + len(cf))
        return {"edge": "output", "accuracy": accuracy, "fit_seconds": fit_s,
                "extraction_seconds": extraction_s, "wall_seconds": fit_s + charged,
                "queries": uses, "trainable_params": count_params(method), "steps": 0,
                "params": _plain(params)}
    accuracy, fit_s = fit_and_score(method, train, test, y_test)
    queries, steps = training_queries(method), getattr(method, "calls_", method.steps)
    return {"edge": method.edge, "accuracy": accuracy, "fit_seconds": fit_s,
            "wall_seconds": fit_s, "queries": int(queries), "trainable_params": int(method.trainable_params_),
            "steps": int(steps), "params": _plain(params)}


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if isinstance(v, str | int | float | bool | list | type(None))
            and k != "progress"}
