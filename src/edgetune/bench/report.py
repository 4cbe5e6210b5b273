"""Rendering experiments: rich tables for the terminal, Markdown for files. Reads results only."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from .experiment import Experiment

NAMES = {"zeroshot": "zero-shot", "calibrated": "calibrated zero-shot", "linear_probe": "linear probe",
         "dect": "DecT", "adept": "ADePT", "dept": "DePT", "pt": "prompt tuning", "lora": "LoRA", "bbt": "BBT",
         "setfit": "SetFit"}


def pct(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def print_experiment(exp: Experiment, console: Console) -> None:
    methods = list(dict.fromkeys(r.method for r in exp.results))
    table = Table(title=f"{exp.task} · {exp.shots}-shot · {exp.model} · {exp.n_test} test examples",
                  title_justify="left")
    table.add_column("seed", justify="right")
    for m in methods:
        table.add_column(NAMES.get(m, m), justify="right")
    for seed in exp.seeds:
        row = [str(seed)]
        for m in methods:
            acc = next(r.accuracy for r in exp.results if r.method == m and r.seed == seed)
            row.append(f"{100 * acc:.1f}")
        table.add_row(*row)
    summary = exp.summary()
    table.add_section()
    table.add_row("mean ± std", *[pct(summary[m]["mean"], summary[m]["std"]) for m in methods], style="bold")
    table.add_row("fit time", *[f"{summary[m]['fit_seconds_mean'] * 1000:.0f} ms" for m in methods])
    table.add_row("trainable params", *[f"{summary[m]['trainable_params']:,}" for m in methods])
    console.print(table)
    if exp.extraction.queries == 0 and exp.extraction.cache_hits == 0:
        steps = {r.steps for r in exp.results}
        console.print(f"training steps: {', '.join(map(str, sorted(steps)))} · "
                      f"mean training time {summary[methods[0]]['fit_seconds_mean']:.1f} s per seed")
        return
    e = exp.extraction
    console.print(
        f"model queries: {e.queries} (cache hits: {e.cache_hits}) · feature extraction: {e.seconds:.1f} s · "
        f"DecT training: {summary.get('dect', {}).get('fit_seconds_mean', float('nan')) * 1000:.0f} ms per seed")
    if e.stats:
        console.print("server: " + " · ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in sorted(e.stats.items())))


def markdown(experiments: Sequence[Experiment]) -> str:
    lines = []
    for exp in experiments:
        s = exp.summary()
        lines.append(f"### {exp.task} · {exp.shots}-shot · {exp.model} · test n = {exp.n_test} · seeds "
                     f"{', '.join(map(str, exp.seeds))}\n")
        lines.append("| method | accuracy (mean ± std, %) | fit time (ms, mean) | trainable params |")
        lines.append("|---|---:|---:|---:|")
        for m, v in s.items():
            lines.append(f"| {NAMES.get(m, m)} | {pct(v['mean'], v['std'])} | {v['fit_seconds_mean'] * 1000:.1f} | "
                         f"{v['trainable_params']:,} |")
        e = exp.extraction
        extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in sorted(e.stats.items()))
        lines.append(f"\nqueries {e.queries} (cache hits {e.cache_hits}), extraction {e.seconds:.1f} s{extra}\n")
    return "\n".join(lines)
