"""What a run or a bench evaluates: tasks x methods x shots x seeds x models, from YAML or built in code.

``edgetune bench CONFIG.yaml`` reads one of these from a file; ``edgetune run METHOD`` builds a one-row
config from its arguments; the benchmark scripts build theirs in code. All of them are run by
:func:`edgetune.bench.runner.run_bench`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..backends.models import DTYPES
from ..data.tasks import Task, load_task
from ..errors import DataError
from ..methods import get_method
from ..methods.core.config import MAX_SEED
from ..paths import safe_name
from .records import cell_key


@dataclass(frozen=True)
class MethodEntry:
    """One method of the grid: a registry name, a label for reports, parameters and optionally its own
    model(s) (e.g. SetFit on an encoder while the others use the default causal LM)."""

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] | None = None

    @classmethod
    def expand(cls, spec: str | Mapping[str, Any]) -> list[MethodEntry]:
        """One entry, or one per combination of a ``sweep`` (parameter -> values), each labelled
        ``"<label> <param>=<value> ..."`` and checked like any entry."""
        if not isinstance(spec, Mapping) or "sweep" not in spec:
            return [cls.parse(spec)]
        sweep = spec["sweep"]
        if not isinstance(sweep, Mapping) or not sweep or not all(
                isinstance(v, list | tuple) and v for v in sweep.values()):
            raise DataError(f"method entry {spec.get('name')!r}: sweep maps parameters to non-empty lists of values, "
                            f"not {sweep!r}")
        base = {k: v for k, v in spec.items() if k != "sweep"}
        label = str(base.get("label", base.get("name")))
        out = []
        for values in itertools.product(*sweep.values()):
            chosen = dict(zip(sweep, values, strict=True))
            out.append(cls.parse({**base, "params": {**dict(base.get("params") or {}), **chosen},
                                  "label": " ".join([label, *(f"{k}={_show(v)}" for k, v in chosen.items())])}))
        return out

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any]) -> MethodEntry:
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise DataError(f"a method entry is a name or a mapping with 'name': {spec!r}")
        unknown = set(spec) - {"name", "label", "params", "model", "models"}
        if unknown:
            raise DataError(f"method entry {spec['name']!r}: unknown key(s) {sorted(unknown)}")
        method = get_method(spec["name"])
        params = method.config.renamed(spec.get("params") or {}, where=f" (bench entry {spec['name']!r})")
        bad = set(params) - set(method.param_names())
        if bad:
            raise DataError(f"method {spec['name']!r} has no parameter(s) {sorted(bad)}; it takes "
                            f"{', '.join(method.param_names())}")
        models = spec.get("models", spec.get("model"))
        if isinstance(models, str):
            models = [models]
        if not models and method.needs == "encoder":  # e.g. SetFit: its own encoder, not the bench's LM
            models = [method.default_model]
        entry = cls(spec["name"], str(spec.get("label", spec["name"])), params, tuple(models) if models else None)
        entry.check()
        return entry

    def check(self) -> None:
        """Raise a one-line error for a parameter value no run can use, before any model is loaded (the
        method's own checks, on an instance that has not touched its model)."""
        if not self.label.strip():
            raise DataError(f"method {self.name!r}: an empty label")
        get_method(self.name).validate_params(self.params)


@dataclass
class BenchConfig:
    """What ``edgetune bench CONFIG.yaml`` runs (see ``benchmarks/*.yaml`` for examples)."""

    name: str
    tasks: list[str | Task]  # registry names, task files, or Task objects (bring-your-own data in code or CLI)
    methods: list[MethodEntry]
    models: list[str] = field(default_factory=lambda: ["smollm2-135m"])
    shots: list[int] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    test_size: int | None = 200
    output: str | None = None
    data_dir: str | None = None
    order: str = "task-first"  # method-first: every cell of the first method, then the next (cheap ones first)
    #: what cells are scored on: the task's test split ({"split": "test"}), or a validation split held out of the
    #: train pool ({"split": "heldout", "per_class": N, "seed": S}: N per class drawn with seed S; the few-shot
    #: samples are then drawn from the rest of the pool, and the test split is never read); either may add
    #: ``at_checks: true`` (see :func:`check_eval`)
    eval: dict[str, Any] = field(default_factory=lambda: {"split": "test"})
    #: "warm": the feature cache next to the results, shared by every run into that folder; "cold": a fresh cache
    #: for this run alone (every query is paid and timed), removed after it
    cache: str = "warm"
    #: extra tables in the report: {"pivot": "accuracy"} (task × method), {"paired": LABEL} (per-seed differences
    #: from that method, on the same samples), {"checks": "rules"} (gradient-trained cells: each run's curves per
    #: dev check and, with ``eval: {at_checks: true}``, the eval accuracy at the check each selection rule keeps),
    #: {"per_class": "confusion"} (precision and recall per label, and a confusion-matrix plot per task and method),
    #: {"choices": "auto"} (auto against DecT and the best single method in hindsight, and what it chose),
    #: {"paired_model": MODEL} (per-seed differences from the same method on that model or backend label)
    views: list[dict[str, Any]] = field(default_factory=list)
    #: named backends the ``models`` list may use (label -> spec, see :func:`check_backend`): a server the bench
    #: starts, one already running, or an in-process model with options; records and reports use the label
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: how few-shot samples are drawn: "per_class" (``shots`` examples of every label) or "natural" (``shots``
    #: examples in all, at the train pool's own label distribution, every label at least once)
    sample: str = "per_class"
    base: Path = field(default_factory=Path.cwd)  # folder relative task files and outputs resolve from

    def __post_init__(self) -> None:
        # a value given twice is run once (a report of "3 seeds" must mean three different samples)
        self.shots, self.seeds = list(dict.fromkeys(self.shots)), list(dict.fromkeys(self.seeds))
        self.models = list(dict.fromkeys(self.models))
        self.tasks = list({task_key(t): t for t in reversed(self.tasks)}.values())[::-1]
        labels = [m.label for m in self.methods]
        twice = sorted({lab for lab in labels if labels.count(lab) > 1})
        if twice:
            raise DataError(f"bench {self.name!r}: method label(s) {twice} are used twice; every method entry needs "
                            "its own label (records and reports are keyed by it)")
        for seed in self.seeds:
            if not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
                raise DataError(f"bench {self.name!r}: a seed is a whole number from 0 to {MAX_SEED}, not {seed!r}")
        self.eval = check_eval(self.name, self.eval)
        if self.sample not in ("per_class", "natural"):
            raise DataError(f"bench {self.name!r}: sample is per_class or natural, not {self.sample!r}")
        if self.cache not in ("warm", "cold"):
            raise DataError(f"bench {self.name!r}: cache is warm or cold, not {self.cache!r}")
        for view in self.views:
            ok = isinstance(view, Mapping) and len(view) == 1 and (
                view.get("pivot") == "accuracy" or view.get("paired") in labels or view.get("checks") == "rules"
                or view.get("extraction") == "totals" or view.get("per_class") == "confusion"
                or view.get("choices") == "auto" or view.get("paired_model") in self.models)
            if not ok:
                raise DataError(f"bench {self.name!r}: a view is {{pivot: accuracy}}, {{checks: rules}}, {{extraction: "
                                f"totals}}, {{per_class: confusion}}, {{choices: auto}}, {{paired: LABEL}} with one "
                                f"of the method labels {labels} or {{paired_model: MODEL}} with one of the models "
                                f"{self.models}, not {view!r}")
        if not isinstance(self.backends, Mapping):
            raise DataError(f"bench {self.name!r}: backends maps a label to a backend spec, not {self.backends!r}")
        self.backends = {str(k): check_backend(self.name, str(k), v) for k, v in self.backends.items()}

    @property
    def heldout(self) -> bool:
        return self.eval["split"] == "heldout"

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> BenchConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError(f"cannot read bench config {str(path)!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise DataError(f"{path}{where}: malformed YAML ({problem})") from None
        if not isinstance(raw, Mapping):
            raise DataError(f"{path}: a bench config is a mapping with tasks, methods, ...")
        return cls.from_dict(raw, base=path.parent, default_name=path.stem)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base: Path | None = None, default_name: str = "bench") -> BenchConfig:
        known = {"name", "tasks", "methods", "models", "shots", "seeds", "test_size", "output", "data_dir", "order",
                 "eval", "cache", "views", "backends", "sample"}
        unknown = set(raw) - known
        if unknown:
            raise DataError(f"bench config: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        for key in ("tasks", "methods"):
            if not raw.get(key):
                raise DataError(f"bench config: '{key}' must list at least one entry")

        def listed(key: str, default: list) -> list:
            value = raw.get(key, default)
            return list(value) if isinstance(value, list | tuple) else [value]

        def whole(v: Any, least: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= least

        def integers(key: str, default: list, least: int) -> list[int]:
            bad = [v for v in listed(key, default) if not whole(v, least)]
            if bad:
                raise DataError(f"bench config: {key} must be whole numbers ≥ {least}, not {bad[0]!r}")
            return listed(key, default)

        test_size = raw.get("test_size", 200)
        if isinstance(test_size, str) and test_size.strip().lower() in ("all", "full", "none"):
            test_size = None  # as on the command line: the whole test set
        if test_size is not None and not whole(test_size, 1):
            raise DataError(f"bench config: test_size must be a whole number ≥ 1 (or all for the whole test set), "
                            f"not {test_size!r}")
        order = str(raw.get("order", "task-first"))
        if order not in ("task-first", "method-first"):
            raise DataError(f"bench config: order is task-first or method-first, not {order!r}")
        return cls(name=str(raw.get("name", default_name)), order=order, tasks=[str(t) for t in listed("tasks", [])],
                   methods=[e for m in listed("methods", []) for e in MethodEntry.expand(m)],
                   models=[str(m) for m in listed("models", ["smollm2-135m"])],
                   shots=integers("shots", [16], 1), seeds=integers("seeds", [0, 1, 2], 0),
                   test_size=test_size, output=raw.get("output"), data_dir=raw.get("data_dir"),
                   eval=raw.get("eval") or {"split": "test"}, cache=str(raw.get("cache", "warm")),
                   views=listed("views", []), backends=raw.get("backends") or {}, base=base or Path.cwd(),
                   sample=str(raw.get("sample", "per_class")))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "order": self.order, "tasks": [task_key(t) for t in self.tasks],
                "models": self.models, "shots": self.shots,
                "seeds": self.seeds, "test_size": self.test_size,
                "methods": [{"name": m.name, "label": m.label, "params": m.params,
                             "models": list(m.models) if m.models else None} for m in self.methods],
                **({"eval": self.eval} if self.eval != {"split": "test"} else {}),
                **({"cache": self.cache} if self.cache != "warm" else {}),
                **({"views": self.views} if self.views else {}),
                **({"backends": self.backends} if self.backends else {}),
                **({"sample": self.sample} if self.sample != "per_class" else {})}

    def load_task(self, spec: str | Task) -> Task:
        if isinstance(spec, Task):
            return spec
        path = Path(spec)
        if spec.endswith((".yaml", ".yml", ".json")) and not path.is_absolute() and not path.exists():
            path = self.base / path
            spec = str(path)
        return load_task(spec, self.data_dir)

    def output_dir(self, override: str | os.PathLike | None = None) -> Path:
        if override is not None:
            return Path(override)
        if self.output is None:
            return Path("results") / "bench" / safe_name(self.name)
        out = Path(self.output)
        return out if out.is_absolute() else Path.cwd() / out

    def narrowed(self, tasks: list[str] | None = None, seeds: list[int] | None = None,
                 methods: list[str] | None = None) -> BenchConfig:
        """The same grid restricted to some tasks, seeds and method labels (``None``: all), for running part
        of a bench now and the rest later (a resumed bench runs what is still missing)."""

        def pick(kind: str, wanted: list | None, have: list, key=lambda x: x) -> list:
            if wanted is None:
                return list(have)
            names = [key(x) for x in have]
            unknown = [w for w in wanted if w not in names]
            if unknown:
                raise DataError(f"bench {self.name!r} has no {kind} {', '.join(map(str, unknown))}; it has "
                                f"{', '.join(map(str, names))}")
            return [x for x in have if key(x) in wanted]

        return replace(self, tasks=pick("task", tasks, self.tasks, task_key), seeds=pick("seed", seeds, self.seeds),
                       methods=pick("method", methods, self.methods, lambda e: e.label))

    def cell_keys(self) -> list[str]:
        """The records' key (:func:`~edgetune.bench.records.cell_key`) of every cell, in run order."""
        return [key_of(c) for c in self.cells()]

    def cells(self) -> list[tuple[str, str | Task, int, int, MethodEntry]]:
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




#: what a remote backend spec may set besides model/server/base_url (:class:`~edgetune.backends.OpenAIBackend`'s
#: options; ``api_key_env``: the environment variable holding the API key, never the key itself)
REMOTE_OPTIONS = ("top_logprobs", "exact", "concurrency", "rate_limit", "timeout", "max_retries", "floor", "hidden",
                  "embeddings_url", "embeddings_model", "engine",
                  "batch_size", "api_key_env")
#: what an in-process backend spec may set besides model
LOCAL_OPTIONS = ("kind", "batch_size", "max_length", "dtype", "threads", "device", "device_map")
#: what ``server:`` may set (:class:`~edgetune.backends.server.LlamaServer`)
SERVER_OPTIONS = ("n_threads", "n_ctx")


def check_backend(name: str, label: str, spec: Any) -> dict[str, Any]:
    """A bench's backend spec, checked before anything starts, or a one-line error. ``model``: the model's name;
    then ``server: {n_threads, n_ctx}`` (the bench starts a llama.cpp server on it, one per model and settings,
    stopped at the end), or ``base_url`` (an OpenAI-compatible server already running), or neither (in process);
    the rest are the backend's options (:data:`REMOTE_OPTIONS`, :data:`LOCAL_OPTIONS`)."""
    where = f"bench {name!r}: backend {label!r}"
    if not isinstance(spec, Mapping) or not isinstance(spec.get("model"), str) or not spec["model"]:
        raise DataError(f"{where} is a mapping with a 'model' name, not {spec!r}")
    if "server" in spec and "base_url" in spec:
        raise DataError(f"{where}: give server (start one) or base_url (one running), not both")
    remote = "server" in spec or "base_url" in spec
    server = spec.get("server")
    if "server" in spec and not (server is None or (isinstance(server, Mapping) and set(server) <= set(
            SERVER_OPTIONS))):
        raise DataError(f"{where}: server is a mapping of {', '.join(SERVER_OPTIONS)} (or empty), not {server!r}")
    if "base_url" in spec and not (isinstance(spec["base_url"], str) and spec["base_url"].startswith("http")):
        raise DataError(f"{where}: base_url is an http(s) URL, not {spec['base_url']!r}")
    allowed = REMOTE_OPTIONS if remote else LOCAL_OPTIONS
    if not remote and spec.get("dtype", "auto") not in DTYPES:
        raise DataError(f"{where}: dtype is one of {', '.join(DTYPES)}, not {spec['dtype']!r}")
    unknown = sorted(set(spec) - {"model", "server", "base_url", *allowed})
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; a {'remote' if remote else 'local'} backend takes model"
                        f"{', server or base_url' if remote else ''}, {', '.join(allowed)}")
    return {**dict(spec), **({"server": dict(server or {})} if "server" in spec else {})}


#: the seed a held-out validation split is drawn with unless the config says
HELDOUT_SEED = 20_000


def check_eval(name: str, value: Any) -> dict[str, Any]:
    """A config's ``eval`` with its defaults filled in, or a one-line error.

    ``at_checks: true`` (either split) also scores the eval split at every dev check of a gradient-trained method,
    recorded per check beside its dev accuracy and loss (``training.checks``): which check each selection rule
    would keep, judged on data the dev split never saw. It changes no result, only what is recorded."""
    if not isinstance(value, Mapping) or value.get("split") not in ("test", "heldout"):
        raise DataError(f"bench {name!r}: eval is {{split: test}} or {{split: heldout, per_class: N}}, not {value!r}")
    at_checks = value.get("at_checks", False)
    if not isinstance(at_checks, bool):
        raise DataError(f"bench {name!r}: eval's at_checks is true or false, not {at_checks!r}")
    extra = {"at_checks": True} if at_checks else {}
    if value["split"] == "test":
        if set(value) - {"split", "at_checks"}:
            raise DataError(f"bench {name!r}: eval on the test split takes only at_checks, not {dict(value)!r}")
        return {"split": "test", **extra}
    unknown = set(value) - {"split", "per_class", "seed", "at_checks"}
    per_class, seed = value.get("per_class"), value.get("seed", HELDOUT_SEED)
    if unknown or not (isinstance(per_class, int) and not isinstance(per_class, bool) and per_class >= 1) or not (
            isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED):
        raise DataError(f"bench {name!r}: a held-out eval is {{split: heldout, per_class: N ≥ 1, seed: S}}, not "
                        f"{dict(value)!r}")
    return {"split": "heldout", "per_class": per_class, "seed": seed, **extra}


def _show(value: Any) -> str:
    """A swept value in a label: numbers short (0.03, 1e-05), lists joined by commas."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(map(_show, value))
    return str(value)


def key_of(cell: tuple[str, str | Task, int, int, MethodEntry]) -> str:
    """The records' key of a cell of :meth:`BenchConfig.cells`."""
    model, task, shots, seed, entry = cell
    return cell_key(model, task_key(task), shots, seed, entry.label)


def task_key(spec: str | Task) -> str:
    """How a task is named in records: its spec string, or a Task object's name."""
    return spec.name if isinstance(spec, Task) else str(spec)
