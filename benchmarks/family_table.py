"""The input-edge family table (issue 15): every input-edge method on sst2, trec and rte, 16-shot, seeds 0-2, the
input-edge table's 500-example test subsets (rte: its whole 277-example test set) — one table from the records,
nothing typed in by hand.

Usage:  python benchmarks/family_table.py

Reads ``results/input_edge_family/results.jsonl`` (this CPU: the six new methods, zero-shot, and whatever
else the family bench ran here), ``results/input_edge_table_gpu/results.jsonl`` (the four earlier methods under
the same recipe on the H200, seeds 0-2 of its five: their accuracy; their CPU time and memory are not in that
run) and ``results/input_edge_memory.json`` (peak training memory of every method, each in a fresh process on
this CPU). Writes ``results/input_edge_family/table.md``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RES = HERE / "results"
TASKS = ["sst2", "trec", "rte"]
SEEDS = {0, 1, 2}
ORDER = ["zeroshot", "finetune", "sift", "lora", "pt", "dept", "adept", "accept", "lamp", "apt", "bbt-120", "bbtv2-120"]


def cells(path: Path, where: str) -> dict[tuple[str, str], list[dict]]:
    from edgetune.bench.records import read_results

    out: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for r in read_results(path) if path.exists() else []:
        if r.get("type") == "cell" and r["task"] in TASKS and r["seed"] in SEEDS and r["shots"] == 16:
            out[(r["method"], r["task"])][r["seed"]] = {**r, "where": where}
    return {k: list(v.values()) for k, v in out.items()}


def main() -> None:
    cpu = cells(RES / "input_edge_family" / "results.jsonl", "CPU")
    gpu = cells(RES / "input_edge_table_gpu" / "results.jsonl", "H200")
    memory_path = RES / "input_edge_memory.json"
    memory = {r["method"]: r for r in json.loads(memory_path.read_text())["rows"]} if memory_path.exists() else {}
    md = ["# The input-edge family · smollm2-135m · 16-shot · seeds 0-2 · 500 test examples (rte: all 277)", "",
          "Accuracy % mean ± std over seeds (worst seed); training wall seconds (mean; CPU = this 2-core machine, "
          "H200 = the input-edge table's GPU run: not comparable); CPU share = process CPU time / (wall × threads), "
          "mean over seeds: ≈ 1 when the runs had the cores to themselves, lower when other work shared them and "
          "the seconds are inflated (blank: recorded before the bench measured it — many of those runs shared the "
          "cores); the training budget used (optimiser steps, or model calls for the black-box searches); "
          "trainable parameters (black-box: numbers searched); peak training memory above the loaded model "
          "(fresh process per method, this CPU, `benchmarks/perf/input_edge_memory.py`). Written by "
          "`python benchmarks/family_table.py`.", ""]
    for task in TASKS:
        md += [f"## {task}", "", "| method | accuracy % | worst seed | train s | CPU share | where | budget | "
               "trainable params | peak MB |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
        for method in ORDER:
            cs = cpu.get((method, task)) or gpu.get((method, task))
            if not cs:
                continue
            acc = np.array([c["accuracy"] for c in cs]) * 100
            spread = f" ± {acc.std(ddof=1):.1f}" if len(acc) > 1 else ""  # one seed: no spread to show
            mem = memory.get(method.split("-")[0])
            seeds = f"{len(cs)} seed{'s' if len(cs) > 1 else ''}"
            shares = [c["cpu_share"] for c in cs if c.get("cpu_share") is not None and c["fit_seconds"] >= 1]
            share = f"{np.mean(shares):.2f}" if len(shares) == len(cs) else ""
            steps, calls = cs[0]["steps"], cs[0]["params"].get("budget")  # a black-box search's calls
            budget = f"{calls} calls" if calls else (f"{steps} steps" if steps else "")
            md.append(f"| {method} | {acc.mean():.1f}{spread} | {acc.min():.1f} | "
                      f"{np.mean([c['fit_seconds'] for c in cs]):.0f} | {share} | {cs[0]['where']} ({seeds}) | "
                      f"{budget} | {cs[0]['trainable_params']:,} | "
                      f"{'' if mem is None else format(mem['peak_mb'], ',.0f')} |")
        md.append("")
    (RES / "input_edge_family" / "table.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
