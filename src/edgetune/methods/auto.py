"""``auto``: the method chosen for the user's own sample by cross-validation on that sample.

``fit`` extracts the sample once per model (the feature cache shares it with every candidate on the same prompt),
scores every output-edge candidate on the same repeated stratified k-fold splits of the sample (scikit-learn's
``RepeatedStratifiedKFold``; never a test set) with the chosen ``metric``, adds the soft vote of the best few as
one more candidate, keeps the best by the tie rule (:func:`~edgetune.methods.core.selection.winner`: a candidate
within ``tie`` standard errors of the best ties with it; a tie goes to ``prefer``, else to the cheapest), and
refits the kept one on the whole sample. Choosing costs no model query beyond the sample's own: every fold is a
subset of the features already extracted.

With a ``time_budget`` and an in-process model, costlier candidates (``costly``: SetFit on its encoder, input-edge
methods) are tried in order where their measured fit time fits what is left: each is timed on two short probe
fits (1 and 3 steps) first, and its full fit estimated from them. SetFit is scored on the first fold like the
others (and refitted on the whole sample if it wins there); an input-edge method is fitted once on the whole
sample and judged on its own dev split (its best dev accuracy), against the output-edge choice's cross-validated
score. Written here, not with ``GridSearchCV``, because the candidates share one extraction (a grid search would
refit the extraction with every candidate) and the tie rule is not scikit-learn's ``refit`` (best mean only).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, load_backend
from ..data.example import Dataset
from ..data.tasks import parse_label_words
from ..errors import DataError, EdgetuneError, IncompatibleError
from ..metrics import multi_label_score, score
from .configs.auto import AutoConfig
from .configs.ensemble import member_specs
from .core.decoders import log_softmax
from .core.estimator import Costs, Method, sub_method
from .core.multilabel import label_folds
from .core.output_edge import OutputEdgeMethod, Prepared
from .core.persistence import jsonable, restore, write_atomically
from .core.registry import get_method, register
from .core.selection import winner


@dataclass
class _Candidate:
    label: str  # "dect", or "dect@minilm-l6" on another model
    name: str
    params: dict[str, Any]
    model: str | None  # None: auto's own model
    backend: Backend
    prepared: Prepared | None = None
    folds: list[float] | None = None
    probs: list[np.ndarray] | None = None  # per split: held-out class probabilities
    skipped: str | None = None


@register
class Auto(Method):
    """The candidate that cross-validates best on the training sample, refitted on all of it.

    Attributes
    ----------
    choice_ : str
        The kept candidate: a method name, ``name@model`` on another model, or ``ensemble(a+b+c)``.
    chosen_ : Method
        The kept method, fitted on the whole sample; ``predict`` is its prediction.
    cv_results_ : dict
        The cross-validation table, in scikit-learn's ``cv_results_`` shape: per candidate ``candidate``,
        ``mean_test_score``, ``std_test_score``, ``rank_test_score``, ``split<i>_test_score`` (the ``metric`` on
        each split), ``tied`` (tied with the best) and ``note`` (why a candidate was skipped); plus ``metric``,
        ``n_splits``, ``n_repeats``, ``extraction`` (prompts read per model), ``costly`` (what the time budget
        admitted and measured) and ``seconds`` (the whole fit).
    """

    config = AutoConfig

    # -- fitting ----------------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[Any] | None = None) -> Auto:
        self._validate_params()
        start = time.perf_counter()
        backend = self.backend
        y, self.indicator_columns_ = self._indicator_targets(
            y, None if self.label_words is None else list(parse_label_words(self.label_words)))
        template, _, labels = self._prompting(X, y)
        _, y_idx = self._labelled(X, y, labels)
        if y_idx.ndim == 2:
            return self._fit_multi_label(X, y, y_idx, template, labels, start)
        counts = np.bincount(y_idx, minlength=len(labels))
        k = int(min(self.cv_folds, counts.min()))
        self.identity_, self.model_name_ = backend.identity, backend.name
        if k < 2:
            rare = labels[int(np.argmin(counts))]
            if self.fallback is None:
                raise DataError(f"auto cross-validates on the sample and needs at least 2 examples of every label "
                                f"({self.cv_folds} for {self.cv_folds}-fold); {rare!r} has {int(counts.min())}: add "
                                "examples, or pass fallback='dect' to fit DecT without choosing")
            chosen = sub_method(self, self.fallback, {}, backend).fit(X, y)
            self._keep(chosen, self.fallback, {"note": f"fallback: {rare!r} has {int(counts.min())} example(s), too "
                                                        "few to cross-validate", "metric": self.metric}, {}, start)
            return self
        from sklearn.model_selection import RepeatedStratifiedKFold

        splits = list(RepeatedStratifiedKFold(n_splits=k, n_repeats=self.cv_repeats, random_state=self.seed)
                      .split(np.zeros(len(y_idx)), y_idx))
        candidates = self._candidates(X, template)
        extraction: dict[str, int] = {}
        for cand in candidates:
            self._cross_validate(cand, X, y, splits, extraction)
        scored = [c for c in candidates if c.folds is not None]
        if not scored:
            raise EdgetuneError("auto: no candidate could be fitted on this sample: " + "; ".join(
                f"{c.label}: {c.skipped}" for c in candidates))
        ensemble = self._ensemble(scored, y_idx, splits)
        pool = scored + ([ensemble] if ensemble is not None else [])
        prefer = next((i for i, c in enumerate(pool) if c.label == self.prefer), None)
        best, tied = winner([c.folds for c in pool], self.tie, prefer)
        kept = pool[best]
        table = self._table(candidates, pool, tied, k, extraction)
        chosen = self._refit(kept, X, y)
        if self.time_budget is not None:
            chosen, kept_label, table["costly"] = self._costly(X, y, splits, kept, chosen, start)
        else:
            kept_label = kept.label
        self._keep(chosen, kept_label, table, extraction, start)
        return self

    def _fit_multi_label(self, X: Any, y: Any, Y: np.ndarray, template: Any, labels: Sequence[str],
                         start: float) -> Auto:
        """Multi-label data: the multi-label candidates compared by ``metric`` (``accuracy``: micro-F1) over
        ``cv_folds`` folds that spread every label (:func:`label_folds`; one repeat), each fold's decisions made
        with the threshold the candidate chose on its own training part; no ensemble and no costly candidates."""
        from ..methods.configs import declarations

        self.identity_, self.model_name_ = self.backend.identity, self.backend.name
        k = int(min(self.cv_folds, Y.sum(axis=0).min()))
        if k < 2:
            raise DataError(f"auto cross-validates on the sample and needs at least 2 texts of every label; "
                            f"{labels[int(np.argmin(Y.sum(axis=0)))]!r} has fewer")
        folds = label_folds(Y, k, self.seed)
        splits = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(k)]
        metric = "micro_f1" if self.metric == "accuracy" else self.metric
        candidates = self._candidates(X, template)
        for cand in candidates:
            if not cand.skipped and not declarations()[cand.name].multi_label:
                cand.skipped = "fits one label per text"
        extraction: dict[str, int] = {}
        for cand in candidates:
            self._cross_validate(cand, X, y, splits, extraction, metric)
        pool = [c for c in candidates if c.folds is not None]
        if not pool:
            raise EdgetuneError("auto: no candidate could be fitted on this sample: " + "; ".join(
                f"{c.label}: {c.skipped}" for c in candidates))
        prefer = next((i for i, c in enumerate(pool) if c.label == self.prefer), None)
        best, tied = winner([c.folds for c in pool], self.tie, prefer)
        table = self._table(candidates, pool, tied, k, extraction)
        table.update(metric=metric, n_repeats=1)
        self._keep(self._refit(pool[best], X, y), pool[best].label, table, extraction, start)
        return self

    def _keep(self, chosen: Method, label: str, table: dict[str, Any], extraction: dict[str, int],
              start: float) -> None:
        self.chosen_, self.choice_ = chosen, label
        self.multi_label_ = bool(getattr(chosen, "multi_label_", False))
        if self.multi_label_:  # predict decides with the kept method's thresholds
            self.thresholds_, self.allow_empty_ = chosen.thresholds_, chosen.allow_empty_
        self.labels_ = tuple(chosen.labels_)
        self.label_values_ = getattr(chosen, "label_values_", None)
        self.extraction_ = dict(extraction)
        table.setdefault("extraction", dict(extraction))
        self.fit_seconds_ = time.perf_counter() - start
        table["seconds"] = self.fit_seconds_
        self.cv_results_ = table

    def _candidates(self, X: Any, template: Any) -> list[_Candidate]:
        task = getattr(X, "task", None)
        several = task is not None and len(task.all_templates) > 1 and self.template is None
        models: list[tuple[str | None, Backend]] = [(None, self.backend)]
        for name in self.models or ():
            if name != self.model_name:
                models.append((name, load_backend(name, cache=self.backend.cache, progress=False)))
        out = []
        for model, backend in models:
            for name, params in member_specs(self.candidates, self.name, at_least=1, what="candidates"):
                label = name if model is None else f"{name}@{model}"
                cand = _Candidate(label, name, dict(params), model, backend)
                if name == "mpd" and not several:
                    cand.skipped = "the task has one template"
                out.append(cand)
        return out

    def _cross_validate(self, cand: _Candidate, X: Any, y: Any, splits: list, extraction: dict[str, int],
                        metric: str | None = None) -> None:
        if cand.skipped:
            return
        method = sub_method(self, cand.name, cand.params, cand.backend)
        if not isinstance(method, OutputEdgeMethod):
            cand.skipped = "not an output-edge method"
            return
        try:
            prep = method.prepare(X, y)
        except EdgetuneError as exc:  # e.g. a method this backend cannot serve
            cand.skipped = str(exc)
            return
        key = cand.model or self.model_name  # the prompts choosing read on that model (cached or not)
        read = (len(prep.train) + len(prep.content_free)) * prep.train.views
        extraction[key] = max(extraction.get(key, 0), read)
        cand.prepared, folds, probs = prep, [], []
        for train_idx, test_idx in splits:
            fold = sub_method(self, cand.name, cand.params, cand.backend)
            fold.fit_prepared(prep.train.take(train_idx), prep.y[train_idx], prep.content_free, prep.labels,
                              prep.template, prep.words, allow_empty=prep.allow_empty)
            scores = fold.decision_features(prep.train.take(test_idx))
            if prep.y.ndim == 2:
                folds.append(multi_label_score(metric or "micro_f1", prep.y[test_idx], fold.decide_scores(scores)))
                continue
            folds.append(score(self.metric, prep.y[test_idx], scores.argmax(1), len(prep.labels)))
            probs.append(np.exp(log_softmax(np.asarray(scores, np.float64))))
        cand.folds, cand.probs = folds, probs

    def _ensemble(self, scored: list[_Candidate], y: np.ndarray, splits: list) -> _Candidate | None:
        """The soft vote of the best ``ensemble`` candidates (on the best one's model), scored on the same splits
        from their held-out probabilities (no refit)."""
        if self.ensemble < 2:
            return None
        lead = max(scored, key=lambda c: np.mean(c.folds))
        same = sorted((c for c in scored if c.model == lead.model), key=lambda c: -np.mean(c.folds))
        members = same[: self.ensemble]
        if len(members) < 2:
            return None
        folds = []
        for i, (_, test_idx) in enumerate(splits):
            vote = np.mean([m.probs[i] for m in members], axis=0)
            folds.append(score(self.metric, y[test_idx], vote.argmax(1), vote.shape[1]))
        label = "ensemble(" + "+".join(m.name for m in members) + ")"
        cand = _Candidate(label, "ensemble", {"members": [{"name": m.name, **m.params} for m in members]},
                          lead.model, lead.backend, folds=folds)
        return cand

    def _table(self, candidates: list[_Candidate], pool: list[_Candidate], tied: list[bool], k: int,
               extraction: dict[str, int]) -> dict[str, Any]:
        rows = pool + [c for c in candidates if c.folds is None]
        # a skipped candidate's scores are None (cv_results_ is saved and recorded as strict JSON)
        means = [float(np.mean(c.folds)) if c.folds is not None else None for c in rows]
        order = sorted(range(len(rows)), key=lambda i: -means[i] if means[i] is not None else math.inf)
        rank = [0] * len(rows)
        for r, i in enumerate(order, 1):
            rank[i] = r
        n_splits = len(pool[0].folds)
        table: dict[str, Any] = {
            "candidate": [c.label for c in rows], "mean_test_score": means,
            "std_test_score": [float(np.std(c.folds)) if c.folds is not None else None for c in rows],
            "rank_test_score": rank, "tied": [*tied, *([False] * (len(rows) - len(pool)))],
            "note": [c.skipped or "" for c in rows]}
        for i in range(n_splits):
            table[f"split{i}_test_score"] = [c.folds[i] if c.folds is not None else None for c in rows]
        table.update(metric=self.metric, n_splits=k, n_repeats=self.cv_repeats, tie=self.tie, prefer=self.prefer,
                     extraction=dict(extraction))
        return table

    def _refit(self, cand: _Candidate, X: Any, y: Any) -> Method:
        method = sub_method(self, cand.name, cand.params, cand.backend)
        if cand.prepared is not None and isinstance(method, OutputEdgeMethod):
            return method.fit_prepared(**vars(cand.prepared))
        return method.fit(X, y)

    # -- the time budget ----------------------------------------------------------------------------------------
    def _costly(self, X: Any, y: Any, splits: list, kept: _Candidate, chosen: Method,
                start: float) -> tuple[Method, str, list[dict[str, Any]]]:
        """Try the costly candidates the time left admits; return the kept method, its label and the log."""
        log: list[dict[str, Any]] = []
        label, best = kept.label, float(np.mean(kept.folds))
        train_idx, test_idx = splits[0]
        fold_score = kept.folds[0]
        for name, params in member_specs(self.costly, self.name, at_least=0, what="costly"):
            entry: dict[str, Any] = {"candidate": name}
            log.append(entry)
            cls = get_method(name)
            if "progress" in cls.param_names():  # no progress bars inside a choice
                params = {"progress": False, **params}
            if not self.backend.provides_weights:  # a remote API: output-edge candidates only
                entry["skipped"] = "the model is not in this process"
                continue
            if cls.needs == "encoder" and not isinstance(X, Dataset):
                entry["skipped"] = "SetFit is compared on a task sample (a Dataset)"
                continue
            left = self.time_budget - (time.perf_counter() - start)
            part = _subset(X, train_idx) if cls.needs == "encoder" else X
            try:
                per_fit, probes = self._estimate(name, params, part, left)
            except EdgetuneError as exc:
                entry["skipped"] = f"probe failed: {exc}"
                continue
            fits = 2 if cls.needs == "encoder" else 1  # SetFit: the fold, then the whole sample if it wins
            full = per_fit(len(X)) * fits
            entry.update(estimated_seconds=round(full, 2), probe_seconds=round(probes, 2),
                         left_seconds=round(left - probes, 2))
            if full > left - probes:
                entry["skipped"] = "over the time left"
                continue
            t0 = time.perf_counter()
            if cls.needs == "encoder":
                method = sub_method(self, name, params, None).fit(part)
                held = _subset(X, test_idx)
                got = score(self.metric, np.array(held.label_ids()),
                            np.asarray(method.class_scores(list(held))).argmax(1), len(X.labels))
                entry.update(fold_score=got, against=fold_score)
                if got > fold_score:
                    method = sub_method(self, name, params, None).fit(X)
                    chosen, label, fold_score = method, name, got
            else:
                method = sub_method(self, name, params, self.backend).fit(X, y)
                got = float(method.history_.get("best_dev_accuracy", math.nan))
                entry.update(dev_score=got, against=best, dev_metric="accuracy")
                if got > best:
                    chosen, label, best = method, name, got
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            entry["kept"] = label == name
        return chosen, label, log

    def _estimate(self, name: str, params: dict[str, Any], X: Any, left: float) -> tuple[Any, float]:
        """Fit seconds as a function of the sample size, from two probe fits of 1 and 3 steps on ``X``: a fixed
        part plus a per-step part, times the steps a full fit of that size takes. Returns it and the probes'
        seconds."""
        t0 = time.perf_counter()
        cls = get_method(name)
        step_key = "max_steps" if "max_steps" in cls.param_names() else "steps"
        times, steps_of = [], None
        for s in (1, 3):
            probe = sub_method(self, name, {**params, step_key: s, "progress": False}, None if cls.needs == "encoder"
                               else self.backend)
            t = time.perf_counter()
            probe.fit(X)
            times.append(time.perf_counter() - t)
            if time.perf_counter() - t0 > left:
                break
            history = getattr(probe, "history_", {}) or {}
            if cls.needs == "encoder":  # SetFit: body steps = contrastive pairs / batch size, per example
                per_example = history.get("pairs", 0) / max(len(X), 1)
                batch = params.get("batch_size", cls.defaults()["batch_size"])
                wanted = params.get("max_steps", cls.defaults()["max_steps"])
                steps_of = _setfit_steps(per_example, batch, wanted)
            else:
                steps_of = _fixed_steps(params.get("steps", cls.defaults()["steps"]))
        probes = time.perf_counter() - t0
        if len(times) < 2 or steps_of is None:
            return (lambda n: math.inf), probes
        per_step = max((times[1] - times[0]) / 2, 0.0)
        fixed = max(times[0] - per_step, 0.0)
        return (lambda n: fixed + per_step * steps_of(n)), probes

    # -- predicting --------------------------------------------------------------------------------------------
    def class_scores(self, X: Any) -> np.ndarray:
        """The kept method's class scores."""
        self._check_fitted()
        return self.chosen_.class_scores(X)

    def costs(self) -> Costs:
        """The kept method's trainable parameters and steps; queries: every prompt choosing read, on every model
        (``extraction_``: the sample and the content-free prompts, cached or not), or the kept method's own where
        more (a costly candidate's training)."""
        self._check_fitted()
        own = self.chosen_.costs()
        read = sum(self.extraction_.values())
        return Costs(trainable_params=own.trainable_params, queries=max(read, own.queries), steps=own.steps)

    def summary(self) -> str:
        """One line: what was kept and the cross-validated score of each candidate."""
        self._check_fitted()
        t = self.cv_results_
        if "candidate" not in t:
            return f"auto chose {self.choice_} ({t.get('note', '')})"
        scored = [(c, m) for c, m in zip(t["candidate"], t["mean_test_score"], strict=True) if m is not None]
        table = ", ".join(f"{c} {100 * m:.1f}" for c, m in sorted(scored, key=lambda x: -x[1]))
        return (f"auto chose {self.choice_} · cross-validated {t['metric']} ({t['n_splits']}-fold × "
                f"{t['n_repeats']}): {table}")

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """A folder with auto's config (the choice and the cross-validation table) and the kept method in
        ``chosen``."""
        self._check_fitted()
        own = getattr(self.chosen_, "identity_", None) == self.identity_
        config = {**self._base_config(), "choice": self.choice_, "cv_results": jsonable(self.cv_results_),
                  "extraction": dict(self.extraction_), "own_model": own, **self._multi_label_config()}
        return write_atomically(path, config, {}, extra=lambda folder: self.chosen_.save(folder / "chosen"))

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> Auto:
        from .core.persistence import load

        obj, config, _ = restore(cls, path, model)
        if not isinstance(config.get("choice"), str) or not isinstance(config.get("cv_results"), dict):
            raise IncompatibleError(f"{str(path)!r}: config.json lacks auto's 'choice' or 'cv_results'; save or train "
                                    "the model again")
        chosen = load(Path(path) / "chosen", model=model if config.get("own_model", True) else None)
        if tuple(chosen.labels_) != obj.labels_:
            raise IncompatibleError(f"{str(path)!r}: the chosen method has other labels than auto's config")
        obj.chosen_, obj.choice_, obj.cv_results_ = chosen, config["choice"], config["cv_results"]
        obj.extraction_ = dict(config.get("extraction") or {})
        obj._restore_multi_label(path, config)  # auto's own record: the kept method's thresholds, its own columns
        return obj


def _setfit_steps(per_example: float, batch: int, wanted: int) -> Any:
    """SetFit's body steps for a sample of n: ``max_steps`` when set, else its pairs (per example) / batch size."""

    def steps(n: int) -> float:
        return wanted if wanted and wanted > 0 else math.ceil(per_example * n / batch)

    return steps


def _fixed_steps(full: int) -> Any:
    def steps(n: int) -> float:
        return full

    return steps


def _subset(X: Dataset, idx: Sequence[int]) -> Dataset:
    import dataclasses

    return dataclasses.replace(X, examples=tuple(X.examples[i] for i in idx))
