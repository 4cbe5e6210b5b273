"""Experiments: tasks x shots x seeds for output-edge methods, sharing one feature extraction.

Every method of a run sees the same few-shot sample, the same test subset and the very same cached
features, so differences between them are the methods' alone. Results are plain dataclasses written
as JSON; reports read nothing else.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backends import Backend
from ..data.tasks import Task
from ..data.templates import Template
from ..methods.base import OutputEdgeMethod, content_free_examples, get_method

OUTPUT_BASELINES = ("zeroshot", "calibrated", "linear_probe", "dect")

# A method to run: its registry name, or (label, registry name, parameters) for a variant.
MethodSpec = str | tuple[str, str, Mapping[str, Any]]


@dataclass
class RunResult:
    """One method on one task, shot count and seed."""

    method: str
    task: str
    model: str
    shots: int
    seed: int
    accuracy: float
    n_train: int
    n_test: int
    fit_seconds: float
    trainable_params: int = 0
    steps: int = 0  # optimizer steps (gradient methods) or model calls (BBT: one candidate over the train set)
    queries: int = 0  # forward passes over single samples the method needs to train (train + dev), cached or not
    params: dict[str, Any] = field(default_factory=dict)
    train_ids: list[str] = field(default_factory=list)
    # how training went (input-edge methods): mean loss of the last 10 steps, dev curve, chosen step
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class Extraction:
    """Model queries made (cache misses), cache hits and wall time of feature extraction."""

    queries: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)  # backend counters: requests, retries, tokens, floored

    def add(self, feats: Any) -> None:
        self.queries += feats.queries
        self.cache_hits += feats.cache_hits
        self.seconds += feats.seconds
        for k, v in feats.stats.items():
            if k != "queries":
                self.stats[k] = self.stats.get(k, 0) + v


@dataclass
class Experiment:
    task: str
    model: str
    model_identity: str
    backend: str
    shots: int
    seeds: list[int]
    n_test: int
    template: str
    label_words: list[str]
    results: list[RunResult]
    extraction: Extraction
    machine: dict[str, Any]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per method: accuracy mean and sample std (ddof=1) over seeds, mean fit time."""
        out: dict[str, dict[str, float]] = {}
        for name in dict.fromkeys(r.method for r in self.results):
            accs = np.array([r.accuracy for r in self.results if r.method == name])
            fits = np.array([r.fit_seconds for r in self.results if r.method == name])
            out[name] = {
                "mean": float(accs.mean()),
                "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
                "fit_seconds_mean": float(fits.mean()),
                "n_seeds": len(accs),
                "trainable_params": int(next(r.trainable_params for r in self.results if r.method == name)),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.summary()
        return d


def unpack_spec(spec: MethodSpec, method_params: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """(label, registry name, a fresh copy of its parameters) for one entry of ``methods``."""
    if isinstance(spec, str):
        return spec, spec, dict(method_params.get(spec, {}))
    return spec[0], spec[1], dict(spec[2])


def machine_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def count_params(method: OutputEdgeMethod) -> int:
    return int(sum(np.asarray(v).size for k, v in method.state().items() if k not in ("mean", "std", "content_free")))


def fit_and_score_features(method: OutputEdgeMethod, task: Task, template: Template, feats: Any, y: np.ndarray,
                           content_free: Any, test_feats: Any, y_test: np.ndarray) -> tuple[float, float]:
    """Train an output-edge method on extracted features; (test accuracy, training seconds)."""
    start = time.perf_counter()
    method.fit_prepared(feats, y, content_free, labels=task.labels, template=template, words=task.words)
    fit_s = time.perf_counter() - start
    pred = method.decision_features(test_feats).argmax(axis=1)
    return float((pred == y_test).mean()), fit_s


def fit_and_score(method: Any, train: Any, test: Any, y_test: np.ndarray) -> tuple[float, float]:
    """Train a method that queries its model itself (input edge, SetFit); (test accuracy, training seconds)."""
    start = time.perf_counter()
    method.fit(train)
    fit_s = time.perf_counter() - start
    pred = np.asarray(method.decision_function(list(test))).argmax(axis=1)
    return float((pred == y_test).mean()), fit_s


def run_output_edge(
    task: Task,
    backend: Backend,
    shots: int,
    seeds: Sequence[int],
    methods: Sequence[MethodSpec] = OUTPUT_BASELINES,
    test_size: int | None = None,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    save_dir: str | os.PathLike | None = None,
) -> Experiment:
    """Run output-edge ``methods`` on ``task`` for every seed; features are extracted once and shared.

    ``method_params`` maps a registry name to constructor parameters; a ``(label, name, params)`` entry
    in ``methods`` runs a variant under its own label (e.g. the reference DecT configuration).
    """
    method_params = method_params or {}
    template = Template(task.template)
    words = task.words
    extraction = Extraction()
    test = task.load("test", limit=test_size, seed=0)
    test_feats = backend.features(test, template, words, f"{task.name} test")
    extraction.add(test_feats)
    cf = backend.features(content_free_examples(template), template, words, "content-free")
    extraction.add(cf)
    y_test = np.array(test.label_ids())
    results: list[RunResult] = []
    for seed in seeds:
        train = task.sample(shots, seed)
        feats = backend.features(train, template, words, f"{task.name} {shots}-shot seed {seed}")
        extraction.add(feats)
        y = np.array(train.label_ids())
        for spec in methods:
            label, name, params = unpack_spec(spec, method_params)
            cls = get_method(name)
            if "seed" in cls.param_names():
                params.setdefault("seed", seed)
            method = cls(model=backend, **params)
            assert isinstance(method, OutputEdgeMethod)
            accuracy, fit_s = fit_and_score_features(method, task, template, feats, y, cf, test_feats, y_test)
            results.append(RunResult(
                method=label, task=task.name, model=backend.name, shots=shots, seed=seed,
                accuracy=accuracy, n_train=len(train), n_test=len(test),
                fit_seconds=fit_s, trainable_params=count_params(method),
                queries=output_edge_queries(name, len(train), len(cf)), params=params,
                train_ids=[str(i) for i in train.ids],
            ))
            if save_dir is not None and label == "dect":
                method.save(Path(save_dir) / f"{task.name}-{shots}shot-seed{seed}")
    return Experiment(
        task=task.name, model=backend.name, model_identity=backend.identity, backend=backend.kind, shots=shots,
        seeds=list(seeds), n_test=len(test), template=task.template, label_words=list(words), results=results,
        extraction=extraction, machine=machine_info(),
    )


def run_input_edge(
    task: Task,
    backend: Backend,
    shots: int,
    seeds: Sequence[int],
    methods: Sequence[MethodSpec],
    test_size: int | None = None,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    save_dir: str | os.PathLike | None = None,
) -> Experiment:
    """Train input-edge ``methods`` (gradients through the frozen model) for every seed and evaluate
    each on the same test subset. ``fit_seconds`` is the whole training run including dev evaluations."""
    from ..methods.input_edge import InputEdgeMethod

    method_params = method_params or {}
    test = task.load("test", limit=test_size, seed=0)
    y_test = np.array(test.label_ids())
    results: list[RunResult] = []
    for seed in seeds:
        train = task.sample(shots, seed)
        for spec in methods:
            label, name, params = unpack_spec(spec, method_params)
            params.setdefault("seed", seed)
            method = get_method(name)(model=backend, **params)
            assert isinstance(method, InputEdgeMethod)
            accuracy, fit_s = fit_and_score(method, train, test, y_test)
            results.append(RunResult(
                method=label, task=task.name, model=backend.name, shots=shots, seed=seed,
                accuracy=accuracy, n_train=len(train), n_test=len(test), fit_seconds=fit_s,
                trainable_params=method.trainable_params_, steps=getattr(method, "calls_", method.steps),
                queries=training_queries(method),
                params={k: v for k, v in method.get_params().items() if k != "progress"},
                train_ids=[str(i) for i in train.ids], training=training_summary(method.history_),
            ))
            if save_dir is not None:
                method.save(Path(save_dir) / f"{task.name}-{label}-{shots}shot-seed{seed}")
    return Experiment(
        task=task.name, model=backend.name, model_identity=backend.identity, backend=backend.kind, shots=shots,
        seeds=list(seeds), n_test=len(test), template=task.template, label_words=list(task.words), results=results,
        extraction=Extraction(), machine=machine_info(),
    )


def training_summary(history: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an input-edge method's ``history_`` that say whether training converged."""
    loss = [float(v) for v in history.get("loss", [])]
    out: dict[str, Any] = {"final_loss": float(np.mean(loss[-10:])) if loss else None,
                           "first_loss": loss[0] if loss else None,
                           "dev_accuracy": [list(map(float, p)) for p in history.get("dev_accuracy", [])]}
    for key in ("best_step", "best_call", "best_dev_accuracy"):
        if key in history:
            out[key] = history[key]
    return out


def output_edge_queries(name: str, n_train: int, n_content_free: int) -> int:
    """Model queries an output-edge method needs: zero-shot none, calibrated zero-shot only the
    content-free prompts, every other method the training prompts and the content-free ones."""
    return {"zeroshot": 0, "calibrated": n_content_free}.get(name, n_train + n_content_free)


def training_queries(method: Any) -> int:
    """Forward passes over single samples a trained method's run made (train and dev)."""
    if hasattr(method, "training_queries_"):  # methods that count their own (SetFit)
        return int(method.training_queries_)
    h = getattr(method, "history_", {})
    if "train_queries" in h:  # BBT counts its own
        return int(h["train_queries"] + h.get("dev_queries", 0))
    per_step = method.batch_size * method.grad_accum
    dev = len(h.get("dev_accuracy", [])) * getattr(method, "dev_size_", 0)
    return int(method.steps * per_step + dev)


def write_json(experiments: Sequence[Experiment], path: str | os.PathLike) -> Path:
    """Write experiments to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps([e.to_dict() for e in experiments], indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path
