"""Reports, from records alone: the terminal table of ``edgetune run``, a Markdown report and PNG plots
of any results file (``edgetune bench --report``). Method names come from the registry."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data.sampling import size_label
from ..errors import EdgetuneError
from ..methods import display_name
from ..metrics import ALL_METRICS, METRIC_NAMES, METRIC_TITLES, MULTI_LABEL_METRICS, per_class
from .records import read_results, results_lock

#: what the peak-memory column means (said only where records carry it)
PEAK_NOTE = (" Peak MB: the most memory training held above what was in use when it started (GPU: CUDA allocator peak; "
             "CPU: C-heap bytes in use, glibc mallinfo2, sampled every 20 ms).")
PLOTS = ("accuracy_vs_shots.png", "accuracy_vs_time.png", "accuracy_vs_queries.png")


def _label(method: str, model: str, default_models: list[str]) -> str:
    name = display_name(method)
    return name if model in default_models else f"{name} ({model})"


def latest_cells(lines: list[dict[str, Any]]) -> dict[tuple[str, str, int, int, str], dict[str, Any]]:
    """The cell records by (model, task, shots, seed, method label); a cell rerun later (e.g. after a deleted line)
    keeps its last result."""
    return {(c["model"], c["task"], c["shots"], c["seed"], c["method"]): c for c in lines if c.get("type") == "cell"}


def summarise(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task: per (method label, model, shots) the mean ± sample std of accuracy over seeds, and means
    of wall seconds, training seconds and queries, trainable parameters and seed count."""
    cells = latest_cells(lines)
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for (model, _, shots, _, method), c in cells.items():
        groups[(c.get("task_name", c["task"]), method, model, shots)].append(c)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (task, method, model, shots), cs in groups.items():
        acc = np.array([c[headline(c)] for c in cs])
        wall = np.array([c["wall_seconds"] for c in cs], dtype=float)
        out[task].append({
            "method": method, "model": model, "shots": shots, "n_seeds": len(cs),
            "seeds": sorted(c["seed"] for c in cs),
            "mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "wall_seconds": float(np.nanmean(wall)) if np.isfinite(wall).any() else float("nan"),
            "fit_seconds": float(np.mean([c["fit_seconds"] for c in cs])),
            "queries": float(np.mean([c["queries"] for c in cs])),
            "trainable_params": int(cs[0]["trainable_params"]), "edge": cs[0].get("edge", "?"),
            "param_parts": (cs[0].get("training") or {}).get("param_parts"),
            "n_train": int(np.mean([c["n_train"] for c in cs])), "n_test": cs[0]["n_test"],
            "min": float(acc.min()), "offset_ratio": _mean_of(cs, "offset_ratio"),
            # the other measures (records from before they existed have accuracy only)
            "measures": {m: _mean_std([c[m] for c in cs]) for m in ALL_METRICS if all(m in c for c in cs)},
            "multi_label": all(c.get("multi_label") for c in cs),
            "peak_memory_mb": (float(np.mean([c["peak_memory_mb"] for c in cs]))
                               if all("peak_memory_mb" in c for c in cs) else None),
            "start_dev": _mean_of(cs, "dev_accuracy", first=True), "best_dev": _mean_of(cs, "best_dev_accuracy"),
            # runs whose trainer rolled back from a collapse (None: records from before the rollback existed)
            "rolled_back": (sum(bool((c.get("training") or {}).get("rollbacks")) for c in cs)
                            if any("rollbacks" in (c.get("training") or {}) for c in cs) else None),
        })
    return dict(out)


#: what a report says of its multi-label tasks' columns
MULTI_LABEL_NOTE = (" Multi-label tasks: micro-F1 in place of accuracy, with macro-F1, samples-F1 and subset accuracy; "
                    "shots are per label (at least that many texts carry each label), n train the texts drawn.")


def headline(cell: dict[str, Any]) -> str:
    """The measure a cell is ranked by: accuracy, or micro-F1 for a multi-label cell."""
    return "micro_f1" if cell.get("multi_label") else "accuracy"


def choices_view(lines: list[dict[str, Any]]) -> list[str]:
    """``auto`` against what it chose among: per (task, shots), the mean accuracy of every method label whose
    cells record a choice, of DecT, and of the best single method in hindsight (the highest mean among the
    labels that record none: known only after scoring every one on the test split), and how often each candidate
    was chosen; then the means over every (task, shots)."""
    cells = latest_cells(lines)
    means: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    chosen: dict[tuple[str, str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (_, _, shots, _, method), c in cells.items():
        task = c.get("task_name", c["task"])
        means[(task, shots)][method].append(c["accuracy"])
        if "choice" in c:
            chosen[(method, task, shots)][c["choice"]["chosen"]] += 1
    autos = list(dict.fromkeys(m for m, _, _ in chosen))
    if not autos:
        return []
    md = ["## auto's choices", "", "Mean accuracy % per task and shots: each auto variant, DecT, and the best single "
          "method in hindsight (the best mean among the methods that choose nothing, known only after scoring them "
          "all on the evaluation split); then what each variant chose, seeds per candidate.", "",
          "| task | shots | " + " | ".join(autos) + " | DecT | best single in hindsight |",
          "|---|---:|" + "---:|" * (len(autos) + 2)]
    columns = defaultdict(list)
    for (task, shots), by in sorted(means.items()):
        singles = {m: float(np.mean(v)) for m, v in by.items() if m not in autos}
        if not singles:
            continue
        best = max(singles, key=singles.get)
        row = [float(np.mean(by[a])) if a in by else math.nan for a in autos]
        dect = singles.get("dect", math.nan)
        for a, v in zip(autos, row, strict=True):
            columns[a].append(v)
        columns["DecT"].append(dect)
        columns["best"].append(singles[best])
        md.append(f"| {task} | {shots} | " + " | ".join(f"{100 * v:.1f}" for v in row)
                  + f" | {100 * dect:.1f} | {100 * singles[best]:.1f} ({display_name(best)}) |")
    md.append("| **mean** | | " + " | ".join(f"**{100 * np.mean(columns[a]):.1f}**" for a in autos)
              + f" | **{100 * np.mean(columns['DecT']):.1f}** | **{100 * np.mean(columns['best']):.1f}** |")
    md += ["", "| auto variant | task | shots | chosen (seeds) |", "|---|---|---:|---|"]
    for (method, task, shots), counts in sorted(chosen.items()):
        text = ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda x: -x[1]))
        md.append(f"| {method} | {task} | {shots} | {text} |")
    return [*md, ""]


def per_class_view(lines: list[dict[str, Any]], default_models: list[str],
                   out: Path | None) -> tuple[list[str], list[Path]]:
    """Per (task, method, shots): each label's precision and recall from the confusion matrices summed over seeds,
    and (with ``out``) a confusion-matrix plot ``confusion-<task>-<method>-<shots>shot.png`` in ``out``; returns
    the Markdown and the plots drawn (listed with the report's other plots)."""
    drawn: list[Path] = []
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for c in latest_cells(lines).values():
        if "confusion" in c and "labels" in c:
            groups[(c.get("task_name", c["task"]), c["method"], c["model"], c["shots"])].append(c)
    md = ["## Per class", "", "Precision and recall % per label, from the confusion matrices of every seed added "
          "together (rows of a plot: the true label; columns: the predicted one).", ""]
    for (task, method, model, shots), cs in sorted(groups.items()):
        labels = cs[0]["labels"]
        total = np.sum([np.asarray(c["confusion"]) for c in cs if c["labels"] == labels], axis=0)
        precision, recall = per_class(total)
        size = size_label(shots, cs[0].get("sample"))
        md += [f"### {task} · {_label(method, model, default_models)} · {size} ({len(cs)} seeds)", "",
               "| label | precision % | recall % | test examples |", "|---|---:|---:|---:|"]
        md += [f"| {lab} | {100 * p:.1f} | {100 * r:.1f} | {int(n)} |"
               for lab, p, r, n in zip(labels, precision, recall, total.sum(1), strict=True)]
        if out is not None:
            from ..paths import safe_name

            name = f"confusion-{safe_name(task)}-{safe_name(method)}-{shots}shot.png"
            _confusion_plot(total, labels, f"{task} · {display_name(method)} · {size}", out / name)
            drawn.append(out / name)
        md.append("")
    return md, drawn


def _confusion_plot(matrix: np.ndarray, labels: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = 3 + 0.35 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=labels).plot(ax=ax, colorbar=False, include_values=len(labels) <= 12,
                                                               xticks_rotation="vertical")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def pivot(summary: dict[str, list[dict[str, Any]]], default_models: list[str]) -> list[str]:
    """The accuracy of every method (and shot count) on every task, side by side."""
    tasks = list(summary)
    rows: dict[tuple[str, str, int], dict[str, str]] = {}
    for task, cells in summary.items():
        for r in cells:
            cell = f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}"
            rows.setdefault((r["method"], r["model"], r["shots"]), {})[task] = cell
    md = ["## Accuracy by task", "", "| method | shots | " + " | ".join(tasks) + " |",
          "|---|---:|" + "---:|" * len(tasks)]
    for (method, model, shots), by_task in rows.items():
        md.append(f"| {_label(method, model, default_models)} | {shots} | "
                  + " | ".join(by_task.get(t, "") for t in tasks) + " |")
    return [*md, ""]


def paired(lines: list[dict[str, Any]], baseline: str, default_models: list[str], across: str = "method") -> list[str]:
    """Each method's accuracy minus ``baseline``'s on the same samples (model, task, shots, seed): mean ± sample std
    of the per-seed differences in points, and on how many samples it was ahead / level / behind. ``across="model"``:
    ``baseline`` is a model label, and each cell is paired with the same method on that model."""
    cells = latest_cells(lines)
    diffs: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    for (model, key, shots, seed, method), c in cells.items():
        other = (model, key, shots, seed, baseline) if across == "method" else (baseline, key, shots, seed, method)
        base = cells.get(other)
        task = c.get("task_name", key)
        if (method if across == "method" else model) != baseline and base is not None:
            diffs[(task, method, model, shots)].append(100 * (c["accuracy"] - base["accuracy"]))
    name = display_name(baseline) if across == "method" else f"the same method on {baseline}"
    md = [f"## Paired with {name}", "",
          f"Per-sample differences in accuracy points (this {across} minus the baseline on the same sample).", "",
          "| task | method | shots | Δ points | ahead / level / behind |", "|---|---|---:|---:|---:|"]
    for (task, method, model, shots), d in diffs.items():
        a = np.array(d)
        std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        md.append(f"| {task} | {_label(method, model, default_models)} | {shots} | {a.mean():+.1f} ± {std:.1f} | "
                  f"{int((a > 0).sum())} / {int((a == 0).sum())} / {int((a < 0).sum())} |")
    return [*md, ""]


#: the selection rule edgetune trains with (``select_by="loss"``), as the checks view names it
EDGETUNE_RULE = "dev loss, also within 2 dev examples of the best accuracy (edgetune)"
#: selection rules a ``checks`` view replays on recorded dev curves: (dev accuracies, dev losses, dev size, the run's
#: training record) -> the index of the check kept
RULES: dict[str, Any] = {
    "dev accuracy, earliest best (the papers' rule)": lambda a, loss, n, t: int(np.argmax(a)),
    "dev accuracy, latest best": lambda a, loss, n, t: int(len(a) - 1 - np.argmax(a[::-1])),
    "dev loss, among checks ≥ the start's accuracy": lambda a, loss, n, t: int(
        min((i for i in range(len(a)) if a[i] >= a[0]), key=lambda i: loss[i])),
    EDGETUNE_RULE: lambda a, loss, n, t: _choose(a, loss, n),
    "latest check within edgetune's window": lambda a, loss, n, t: _latest_in_window(a, n),
    "last check if within edgetune's window, else edgetune's pick": lambda a, loss, n, t: (
        len(a) - 1 if _latest_in_window(a, n) == len(a) - 1 else _choose(a, loss, n)),
    "last check, or edgetune's pick if a rollback fired": lambda a, loss, n, t: (
        _choose(a, loss, n) if t.get("rollbacks") else len(a) - 1),
    "last check": lambda a, loss, n, t: len(a) - 1,
}


def _choose(a: np.ndarray, loss: np.ndarray, n_dev: int) -> int:
    from ..methods.core.selection import choose

    return choose([(i, a[i], loss[i], None) for i in range(len(a))], "loss", n_dev)


def _latest_in_window(a: np.ndarray, n_dev: int) -> int:
    """The latest check that edgetune's loss rule could keep: at least as accurate on dev as the start and within
    two dev examples of the most accurate check."""
    from ..methods.core.selection import accuracy_floor

    floor = accuracy_floor(list(a), n_dev)
    return max(i for i in range(len(a)) if a[i] >= floor)


def rule_table(runs: list[Mapping[str, Any]]) -> list[str]:
    """Per selection rule, the eval accuracy at the check it keeps over ``runs`` (training records with dev curves
    and ``eval_accuracy`` per check): mean, sample std, worst run, and the per-run difference from edgetune's rule
    (mean ± standard error; runs ahead / level / behind), beside the best check in hindsight."""
    picks: dict[str, list[float]] = {name: [] for name in [*RULES, "best check in hindsight (eval)"]}
    for t in runs:
        a = np.array([v for _, v in t["dev_accuracy"]])
        loss = np.array([v for _, v in t["dev_loss"]])
        ev = np.array(t["eval_accuracy"])
        for name, rule in RULES.items():
            picks[name].append(float(ev[rule(a, loss, t.get("n_dev", 0), t)]))
        picks["best check in hindsight (eval)"].append(float(ev.max()))
    base = 100 * np.array(picks[EDGETUNE_RULE])
    md = ["| rule | mean | std | worst | Δ vs edgetune's | ahead / level / behind |", "|---|---:|---:|---:|---:|---:|"]
    for name, vals in picks.items():
        v = 100 * np.array(vals)
        d = v - base
        std = f"{v.std(ddof=1):.1f}" if len(v) > 1 else ""
        se = f" ± {d.std(ddof=1) / np.sqrt(len(d)):.1f}" if len(d) > 1 else ""
        md.append(f"| {name} | {v.mean():.1f} | {std} | {v.min():.1f} | {d.mean():+.1f}{se} | "
                  f"{int((d > 1e-9).sum())} / {int((abs(d) <= 1e-9).sum())} / {int((d < -1e-9).sum())} |")
    return md


def checks(lines: list[dict[str, Any]], default_models: list[str]) -> list[str]:
    """Gradient-trained cells check by check: per method label, the eval accuracy at the check each selection
    rule keeps (replayed on the recorded dev curves; mean, sample std and worst over runs) beside the best check in
    hindsight (see :func:`rule_table`), and per run its curves — training loss since the previous check, dev
    accuracy, eval accuracy — and the check training kept; then the rules over all runs pooled. Eval accuracy per
    check is recorded with ``eval: {at_checks: true}``."""
    runs = [c for c in latest_cells(lines).values() if len((c.get("training") or {}).get("dev_loss") or []) > 1]
    md = ["## Check by check", "",
          "Eval accuracy % at the dev check each selection rule keeps (replayed on each run's recorded dev curve; "
          "mean, sample std, worst run), then each run's curves: training loss (mean since the previous check), dev "
          "accuracy % and eval accuracy % at each check, the start first, and the check training kept.", ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in runs:
        groups[(c["method"], c["model"])].append(c)
    for (method, model), cs in groups.items():
        tasks = ", ".join(dict.fromkeys(c.get("task_name", c["task"]) for c in cs))
        md += [f"### {_label(method, model, default_models)}: {tasks} ({len(cs)} run{'s' if len(cs) > 1 else ''})",
               ""]
        scored = [c["training"] for c in cs if c["training"].get("eval_accuracy")]
        if scored:
            md += [*rule_table(scored), ""]
        md += ["| run | training loss | dev % | eval % | kept |", "|---|---|---|---|---:|"]
        for c in cs:
            t = c["training"]
            loss = " ".join("" if v is None else f"{v:.2f}" for v in t.get("loss_per_check") or [])
            dev = " ".join(f"{100 * v:.0f}" for _, v in t["dev_accuracy"])
            ev = " ".join(f"{100 * v:.1f}" for v in t.get("eval_accuracy") or [])
            kept = f"step {t['best_step']}" if t.get("best_step") is not None else ""
            md.append(f"| {c.get('task_name', c['task'])} seed {c['seed']} | {loss} | {dev} | {ev} | {kept} |")
        md.append("")
    pooled = [c["training"] for c in runs if c["training"].get("eval_accuracy")]
    if len(groups) > 1 and pooled:
        md += [f"### All runs pooled ({len(pooled)})", "", *rule_table(pooled), ""]
    return md


def extraction(lines: list[dict[str, Any]], default_models: list[str]) -> list[str]:
    """What querying the model cost, per model and task: prompts queried, their seconds and rate, and the backend's
    counters added up (a remote API's requests, retries, exact / recovered / floored label-word scores, tokens)."""
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for x in lines:
        if x.get("type") != "extraction":
            continue
        t = totals.setdefault((x["model"], x["task"]), defaultdict(float))
        t["prompts"] += x["queries"]
        t["seconds"] += x["seconds"]
        for k, v in (x.get("stats") or {}).items():
            if k != "queries" and isinstance(v, int | float):
                t[k] += v
    keys = list(dict.fromkeys(k for t in totals.values() for k in t if k not in ("prompts", "seconds")))
    md = ["## Extraction", "", "Prompts the model was asked (cache hits excluded), their seconds, and the backend's "
          "counters over those queries.", "", "| model | task | prompts | seconds | prompts/s | " + " | ".join(keys)
          + (" |" if keys else "|"), "|---|---|---:|---:|---:|" + "---:|" * len(keys)]
    for (model, task), t in totals.items():
        rate = t["prompts"] / t["seconds"] if t["seconds"] else float("nan")
        md.append(f"| {model} | {task} | {t['prompts']:,.0f} | {_fmt_s(t['seconds'])} | {_fmt_s(rate)} | "
                  + " | ".join(f"{t.get(k, 0):,.0f}" for k in keys) + (" |" if keys else ""))
    return [*md, ""]


def _mean_of(cells: list[dict[str, Any]], key: str, first: bool = False) -> float | None:
    """Mean over cells of a ``training`` entry (``first``: the dev accuracy at step 0), if any cell has it."""
    values = []
    for c in cells:
        value = (c.get("training") or {}).get(key)
        if first:
            value = value[0][1] if value and value[0][0] == 0 else None
        if value is not None:
            values.append(float(value))
    return float(np.mean(values)) if values else None


def _params(row: dict[str, Any]) -> str:
    """The trainable-parameter count, with its parts where a method's budget counts only some (APT)."""
    parts = row.get("param_parts")
    detail = f" ({' + '.join(f'{k} {v:,}' for k, v in parts.items())})" if parts else ""
    return f"{row['trainable_params']:,}{detail}"


def _fmt_s(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.2f}" if x < 10 else f"{x:,.0f}"


def render(results: str | os.PathLike | list, out_dir: str | os.PathLike | None = None, plots: bool = True, *,
           tasks: list[str] | None = None, seeds: list[int] | None = None,
           methods: list[str] | None = None, per_class: bool = False) -> Path:
    """Write ``report.md`` (and the plots) next to ``results`` (or into ``out_dir``); return the report path.

    ``results`` may also be several results files (each a path, or ``"NAME=path"``) for one report from all of
    them, e.g. the same methods run on two machines: it needs ``out_dir`` (never a source's own folder, whose
    report is that file's), and each cell is shown under its model *and* its source's name (``NAME``, else the
    results' folder name), so rows from different sources are never pooled. ``tasks``, ``seeds`` and
    ``methods`` (labels) keep only those cells. ``per_class``: add the per-class view (precision and recall per
    label, and confusion-matrix plots) whether the config asks for it or not."""
    sources = _sources(results)
    keep = {"task": tasks, "seed": seeds, "method": methods}
    if len(sources) == 1 and not any(keep.values()):
        return _render_one(sources[0][1], out_dir, plots, per_class)
    if out_dir is None:
        raise EdgetuneError("a report of several results files (or of some of their cells) needs an output folder "
                            "(-o DIR)")
    out = Path(out_dir)
    taken = [str(p) for _, p in sources if p.parent.resolve() == out.resolve()]
    if taken:
        raise EdgetuneError(f"{str(out)!r} holds {taken[0]}, whose own report is written there; give another folder")
    lines: list[dict[str, Any]] = []
    for name, path in sources:
        for x in read_results(path):
            if not _kept(x, tasks, seeds, methods):
                continue
            if x.get("type") in ("cell", "extraction") and len(sources) > 1:
                x = {**x, "model": f"{x['model']}, {name}"}
            lines.append(x)
    given = " ".join(f"{name}={path}" if len(sources) > 1 else str(path) for name, path in sources)
    filters = "".join(f" --{k}s {' '.join(map(str, v))}" for k, v in keep.items() if v)
    source = (f"- From {', '.join(f'`{path}`' for _, path in sources)} "
              f"({sum(1 for x in lines if x.get('type') == 'cell')} cells{', filtered' if filters else ''}); "
              f"re-render with `edgetune bench --report {given}{filters} -o {out}`.")
    return _render(sources[0][1], out, plots, lines, title=" + ".join(name for name, _ in sources), source=source,
                   per_class=per_class)


def _kept(x: dict[str, Any], tasks: list[str] | None, seeds: list[int] | None, methods: list[str] | None) -> bool:
    """Whether a record line stays in a filtered report (headers always do; extraction lines by task and seed)."""
    if x.get("type") not in ("cell", "extraction"):
        return True
    if tasks and x.get("task") not in tasks and x.get("task_name") not in tasks:
        return False
    if seeds and "seed" in x and x["seed"] not in seeds:
        return False
    return not (methods and x.get("type") == "cell" and x.get("method") not in methods)


def _sources(results: str | os.PathLike | list) -> list[tuple[str, Path]]:
    """(name, path) of each results file given: ``NAME=path`` or a path (named by its folder)."""
    items = results if isinstance(results, list | tuple) else [results]
    out = []
    for item in items:
        text = str(item)
        name, eq, rest = text.partition("=")
        path = Path(rest) if eq and not Path(text).exists() else Path(text)
        out.append((name if eq and not Path(text).exists() else path.parent.name, path))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise EdgetuneError(f"two results files share the name {next(n for n in names if names.count(n) > 1)!r}; "
                            "name them: NAME=path")
    return out


def _render_one(results: Path, out_dir: str | os.PathLike | None, plots: bool, per_class: bool = False) -> Path:
    out = Path(out_dir) if out_dir is not None else results.parent
    if out.exists() and not out.is_dir():
        raise EdgetuneError(f"report folder {str(out)!r} is a file; give a folder")
    if not results.is_file():
        return _render(results, out, plots, read_results(results), per_class=per_class)  # it says what is wrong
    if not os.access(results.parent, os.W_OK):  # records nobody can append to here: nothing to wait for
        return _render(results, out, plots, read_results(results), per_class=per_class)
    with results_lock(results):  # a report from every record, never one overwritten by an older reading
        return _render(results, out, plots, read_results(results), per_class=per_class)


def _render(results: Path, out: Path, plots: bool, lines: list[dict[str, Any]], title: str | None = None,
            source: str | None = None, per_class: bool = False) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    headers = [x for x in lines if x.get("type") == "header"]
    if not headers:
        raise EdgetuneError(f"{results} has no header line; is it an edgetune results file?")
    config = dict(headers[0]["config"])
    for key in ("tasks", "shots", "seeds"):  # what every invocation covered (a bench may run in parts)
        config[key] = list(dict.fromkeys(v for h in headers for v in h["config"][key]))
    if source is not None:  # several sources or some cells: what the report's cells cover
        cells = [x for x in lines if x.get("type") == "cell"]
        config.update(tasks=list(dict.fromkeys(c["task"] for c in cells)),
                      shots=list(dict.fromkeys(c["shots"] for c in cells)),
                      seeds=sorted({c["seed"] for c in cells}))
    summary = summarise(lines)
    models = config.get("models", [])
    # a row names its model unless the grid has one model and the cell ran on it (a method's own `models:` may add
    # others)
    default_models = models if len(models) == 1 else []
    machines = list(dict.fromkeys(json.dumps(h["machine"], sort_keys=True) for h in headers))
    md = [f"# Bench: {title or config['name']}", "",
          f"- Models: {', '.join(models)}"
          + "".join(f"; {m['name']} on {', '.join(m['models'])}" for m in config["methods"] if m.get("models")),
          f"- Tasks: {', '.join(config['tasks'])} · shots: {', '.join(map(str, config['shots']))} · seeds: "
          f"{', '.join(map(str, config['seeds']))} · test subset: {config.get('test_size') or 'full'} "
          "(seeded, the same for every method)",
          f"- Machine(s): {'; '.join(machines)}",
          source or f"- From `{results.name}` ({sum(1 for x in lines if x.get('type') == 'cell')} cells, "
          f"{len(headers)} invocation(s)); re-render with `edgetune bench --report " + results.name + "`.",
          "- Accuracy: mean ± sample std over seeds, %. Wall s: training time, plus for output-edge methods the "
          "time to query the model on the training prompts (test-set inference excluded for all). Queries: "
          "forward passes over single samples that training needs (train + dev; BBT: calls × k-shot set; "
          "SetFit: two per contrastive pair + one per example)." + (PEAK_NOTE if any(
              x.get("peak_memory_mb") is not None for x in lines if x.get("type") == "cell") else "")
          + (MULTI_LABEL_NOTE if any(x.get("multi_label") for x in lines if x.get("type") == "cell") else ""), ""]
    for task, rows in summary.items():
        n_test = rows[0]["n_test"]
        md.append(f"## {task} (test n = {n_test})\n")
        trained = any(r["best_dev"] is not None for r in rows)  # columns that only newer records carry
        guarded = any(r.get("rolled_back") is not None for r in rows)
        measured = any(r.get("peak_memory_mb") is not None for r in rows)
        multi = all(r.get("multi_label") for r in rows)
        names = MULTI_LABEL_METRICS if multi else METRIC_NAMES
        others = [m for m in names[1:] if any(m in r["measures"] for r in rows)]
        md.append(f"| method | {'shots per label' if multi else 'shots'} | n train | {METRIC_TITLES[names[0]]} % |"
                  + "".join(f" {METRIC_TITLES[m]} % |" for m in others)
                  + " wall s | train s | queries | trainable params | seeds |"
                  + (" worst seed % | dev % start → chosen | offset ratio |" if trained else "")
                  + (" runs rolled back |" if guarded else "") + (" peak MB |" if measured else ""))
        md.append("|---|---:|---:|---:|" + "---:|" * len(others) + "---:|---:|---:|---:|---:|"
                  + ("---:|---:|---:|" if trained else "")
                  + ("---:|" if guarded else "") + ("---:|" if measured else ""))
        for r in sorted(rows, key=lambda r: (r["shots"], -r["mean"])):
            extra = ""
            if trained:
                dev = (f"{100 * r['start_dev']:.1f} → {100 * r['best_dev']:.1f}" if r["best_dev"] is not None
                       and r["start_dev"] is not None else "")
                ratio = f"{r['offset_ratio']:.3f}" if r["offset_ratio"] is not None else ""
                extra = f" {100 * r['min']:.1f} | {dev} | {ratio} |"
            if guarded:
                extra += f" {r['rolled_back'] if r.get('rolled_back') is not None else ''} |"
            if measured:
                extra += f" {r['peak_memory_mb']:,.0f} |" if r.get("peak_memory_mb") is not None else " |"
            md.append(f"| {_label(r['method'], r['model'], default_models)} | {r['shots']} | {r['n_train']} | "
                      f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f} | "
                      + "".join(f"{pct(*r['measures'][m])} | " if m in r["measures"] else " | " for m in others)
                      + f"{_fmt_s(r['wall_seconds'])} | "
                      f"{_fmt_s(r['fit_seconds'])} | {r['queries']:,.0f} | {_params(r)} | "
                      f"{r['n_seeds']} |" + extra)
        md.append("")
    views = [json.loads(v) for v in dict.fromkeys(  # every invocation's views, in order, once each
        json.dumps(view, sort_keys=True) for h in headers for view in h["config"].get("views", []))]
    if per_class and {"per_class": "confusion"} not in views:
        views.append({"per_class": "confusion"})
    confusions: list[Path] = []  # the per-class view's plots, listed with the others
    for view in views:
        if "pivot" in view:
            md += pivot(summary, default_models)
        elif "checks" in view:
            md += checks(lines, default_models)
        elif "extraction" in view:
            md += extraction(lines, default_models)
        elif "choices" in view:
            md += choices_view(lines)
        elif "per_class" in view:
            text, drawn = per_class_view(lines, default_models, out if plots else None)
            md += text
            confusions += drawn
        elif "paired_model" in view:
            md += paired(lines, view["paired_model"], default_models, across="model")
        else:
            md += paired(lines, view["paired"], default_models)
    if plots and summary:
        made = plot(summary, out, default_models) + confusions
        md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in made] + [""]
    path = out / "report.md"
    tmp = out / f".report.md.{os.getpid()}.tmp"
    tmp.write_text("\n".join(md), encoding="utf-8")
    os.replace(tmp, path)
    return path


def plot(summary: dict[str, list[dict[str, Any]]], out: Path, default_models: list[str]) -> list[Path]:
    """accuracy vs shots, vs wall time and vs queries (log axes), one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    labels = sorted({_label(r["method"], r["model"], default_models) for rows in summary.values() for r in rows})
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    color = {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}
    marker = dict(zip(labels, "osD^v<>phX*" * 3, strict=False))
    made = []
    for fname, xkey, xlabel, logx in (("accuracy_vs_shots.png", "shots", "shots per class", False),
                                      ("accuracy_vs_time.png", "wall_seconds", "wall seconds (log)", True),
                                      ("accuracy_vs_queries.png", "queries", "model queries (log; 0 drawn at 1)",
                                       True)):
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in summary[task]:
                by_label[_label(r["method"], r["model"], default_models)].append(r)
            for lab, rows in sorted(by_label.items()):
                rows = sorted(rows, key=lambda r: r[xkey] if math.isfinite(r[xkey]) else 0)
                xs = [max(r[xkey], 1.0) if xkey == "queries" else r[xkey] for r in rows]
                ok = [i for i, x in enumerate(xs) if math.isfinite(x) and (x > 0 or not logx)]
                if not ok:
                    continue
                ax.errorbar([xs[i] for i in ok], [100 * rows[i]["mean"] for i in ok],
                            yerr=[100 * rows[i]["std"] for i in ok], color=color[lab], marker=marker[lab],
                            linestyle="-" if xkey == "shots" else "none", capsize=3, label=lab, markersize=6)
            if logx:
                ax.set_xscale("log")
            ax.set_title(f"{task} (test n={summary[task][0]['n_test']})")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("accuracy %")
            ax.grid(alpha=0.3)
        handles, names = [], []
        for ax in axes[0]:
            for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
                if n not in names:
                    handles.append(h)
                    names.append(n)
        if not names:  # nothing to draw on these axes (e.g. no cell has a finite wall time)
            plt.close(fig)
            continue
        fig.legend(handles, names, loc="lower center", ncol=min(5, len(names)), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(names) - 1) // 5), 1, 1))
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def pct(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def last_invocation(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines written by the last invocation (after its header)."""
    starts = [i for i, x in enumerate(lines) if x.get("type") == "header"]
    return lines[starts[-1]:] if starts else lines


def lines_of_run(lines: list[dict[str, Any]], config: Any, run_id: str) -> list[dict[str, Any]]:
    """What ``edgetune run`` shows: the latest record of every cell of ``config`` (those this invocation ran
    and those it found done), and the extraction lines this invocation (``run_id``) wrote — never another
    process's lines written to the same file meanwhile."""
    from .records import record_key

    wanted = set(config.cell_keys())
    latest = {}
    for x in lines:
        if x.get("type") == "cell" and (key := record_key(x)) in wanted:
            latest[key] = x
    paid = [x for x in lines if x.get("type") == "extraction" and x.get("run") == run_id]
    return paid + list(latest.values())


def print_run(lines: list[dict[str, Any]], console: Any, metric: str = "accuracy") -> None:
    """One rich table per (model, task, shots): ``metric`` (:data:`~edgetune.metrics.METRIC_NAMES`) per seed and
    method, mean ± std, training time, trainable parameters; then what the model queries cost (or the training
    steps)."""
    from rich.table import Table

    cells = [c for c in lines if c.get("type") == "cell"]
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        groups[(c["model"], c.get("task_name", c["task"]), c["shots"])].append(c)
    asked = metric
    for (model, task, shots), cs in groups.items():
        # a multi-label table reads micro-F1 unless a multi-label measure was asked for
        metric = "micro_f1" if all(c.get("multi_label") for c in cs) and asked not in MULTI_LABEL_METRICS else asked
        methods = list(dict.fromkeys(c["method"] for c in cs))
        seeds = sorted({c["seed"] for c in cs})
        n, pool = cs[0]["n_test"], cs[0].get("n_test_pool", cs[0]["n_test"])
        sub = f" (a seeded subset of {pool:,}; --test-size all for every one)" if pool > n else ""
        size = f"{shots} per label" if cs[0].get("multi_label") else size_label(shots, cs[0].get("sample"))
        table = Table(title=f"{task} · {size} · {model} · {n:,} test examples{sub} · "
                            f"{METRIC_TITLES[metric]} %",
                      title_justify="left")
        table.add_column("seed", justify="right")
        for m in methods:
            table.add_column(display_name(m), justify="right")
        by = {(c["method"], c["seed"]): c for c in cs}
        for seed in seeds:
            table.add_row(str(seed), *[f"{100 * by[(m, seed)][metric]:.1f}" if metric in by.get((m, seed), {})
                                       else "-" for m in methods])
        table.add_section()
        stats = {}
        for m in methods:
            acc = np.array([c[metric] for c in cs if c["method"] == m and metric in c] or [math.nan])
            fit = np.mean([c["fit_seconds"] for c in cs if c["method"] == m])
            stats[m] = (acc.mean(), acc.std(ddof=1) if len(acc) > 1 else 0.0, fit)
        table.add_row("mean ± std", *[pct(stats[m][0], stats[m][1]) for m in methods], style="bold")
        table.add_row("fit time", *[_fmt_time(stats[m][2]) for m in methods])
        table.add_row("trainable params", *[f"{next(c['trainable_params'] for c in cs if c['method'] == m):,}"
                                            for m in methods])
        console.print(table)
        for c in sorted((c for c in cs if "choice" in c), key=lambda c: (c["method"], c["seed"])):
            console.print(f"seed {c['seed']}: {c['choice']['summary']}", highlight=False)
        trained = [c for c in cs if c.get("edge") != "output"]
        if trained:
            steps = sorted({c["steps"] for c in trained})
            console.print(f"training steps: {', '.join(map(str, steps))} · mean training time "
                          f"{np.mean([c['fit_seconds'] for c in trained]):.1f} s per seed")
    paid = [x for x in lines if x.get("type") == "extraction"]
    if any(c.get("edge") == "output" for c in cells):
        queries = sum(x["queries"] for x in paid)
        seconds = sum(x["seconds"] for x in paid)
        console.print(f"model queries: {queries:,} (the rest came from the feature cache) · feature extraction: "
                      f"{seconds:.1f} s")
        server: dict[str, int] = defaultdict(int)
        for x in paid:
            for k, v in (x.get("stats") or {}).items():
                if k != "queries":
                    server[k] += v
        if server:
            console.print("server: " + " · ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in sorted(server.items())))


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"
