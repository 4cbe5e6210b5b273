"""ADePT vs DePT vs prompt tuning vs LoRA at a matched trainable budget (100-token prompt tuning).

Usage:  EDGETUNE_DATA_DIR=../shared/data python scripts/input_edge_accuracy.py \
            [--tasks sst2 cb] [--shots 16] [--seeds 0 1 2] [--steps 30] [--test-size 100] [--append]
        python scripts/input_edge_accuracy.py --render [--out STEM]   (only re-render STEM.md)

Every method trains with the same trainer, sample, dev split and step budget, and is scored on the same
seeded test subset: the runs are cells of edgetune's one runner (:func:`edgetune.bench.runner.run_bench`),
which records them in STEM/results.jsonl (STEM: ``--out``, default benchmarks/results/input_edge_accuracy)
and, with ``--append``, skips the cells already recorded there. CPU-sized: the step budget is far below the
papers' (tens of thousands of steps); the script states what it ran. Writes STEM.md.

Results stored by the earlier experiment runner (STEM.json: a list of experiment dicts, or a GPU session's
``{"experiments": [...]}``) are converted to cell records on read: ``--render`` and ``--append`` include them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.bench.records import machine_info, read_results
from edgetune.bench.report import pct
from edgetune.methods import display_name

METHODS = ("adept", "dept", "pt", "lora")


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "cb"])
    ap.add_argument("--shots", nargs="+", type=int, default=[16])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--test-size", type=int, default=100)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=str(RESULTS / "input_edge_accuracy"),
                    help="STEM: records in STEM/results.jsonl, report in STEM.md (older results: STEM.json)")
    ap.add_argument("--append", action="store_true", help="add to the results already stored in --out")
    ap.add_argument("--render", action="store_true", help="run nothing: re-render STEM.md from what is stored")
    args = ap.parse_args()
    stem = Path(args.out)

    if args.render:
        cells, info = stored(stem)
        if not cells:
            raise SystemExit(f"nothing stored at {stem}.json or {stem / 'results.jsonl'}")
        settings_from(cells, info, args)
        text = render(cells, args)
        stem.with_suffix(".md").write_text(text, encoding="utf-8")
        print(text)
        return

    from edgetune.backends import FeatureCache, LocalBackend
    from edgetune.bench import BenchConfig, MethodEntry, run_bench

    backend = LocalBackend.load(args.model, progress=False)
    params = {"steps": args.steps, "batch_size": args.batch_size, "eval_every": max(1, args.steps // 3),
              "dev_shots": 8}
    legacy, info = stored(stem, records=False) if args.append else ([], {})
    fresh = not args.append
    for name in args.tasks:
        for shots in args.shots:
            config = BenchConfig(name="input_edge_accuracy", tasks=[name], models=[args.model], shots=[shots],
                                 seeds=list(args.seeds), test_size=args.test_size,
                                 methods=[MethodEntry(m, m, dict(params)) for m in METHODS])
            path = run_bench(config, output=stem, progress=False, backends={args.model: backend},
                             cache=FeatureCache(None), fresh=fresh)
            fresh = False  # the next (task, shots) adds to this invocation's records
            lines = read_results(path)
            mine = [c for c in as_cells(lines) if c["task"] == name and c["shots"] == shots]
            s = summarise(mine)
            print(f"{name} {shots}-shot: " + " · ".join(f"{m} {pct(v['mean'], v['std'])}"
                                                        for g in s.values() for m, v in g["methods"].items()),
                  flush=True)
            args.machine = machines_line([*info.get("machines", []), *header_machines(lines)])
            stem.with_suffix(".md").write_text(render(legacy + as_cells(lines), args), encoding="utf-8")
    print(stem.with_suffix(".md").read_text(encoding="utf-8"))


# -- stored results: run_bench records, and the old experiment runner's dicts converted on read ---------------
def as_cells(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cell records from stored items: run_bench lines (cells kept as they are, other lines skipped) or
    experiment dicts of the old runner / a GPU session's merged groups (each result converted, unless it
    already is a cell record)."""
    out = []
    for item in items:
        if item.get("type") == "cell":
            out.append(item)
        elif "results" in item:
            out += [r if r.get("type") == "cell" else cell_from_run_result(r, item) for r in item["results"]]
    return out


def cell_from_run_result(r: dict[str, Any], exp: dict[str, Any]) -> dict[str, Any]:
    """A cell record (as run_bench writes it) from one result of the old experiment runner. Old input-edge
    runs recorded no wall time apart from training, so ``wall_seconds`` is the training time; ``queries``
    and ``training`` are present only where the old runner recorded them."""
    cell = {"type": "cell", "model": r["model"], "task": r["task"], "task_name": r["task"], "shots": r["shots"],
            "seed": r["seed"], "method": r["method"], "name": r["method"], "edge": "input",
            "accuracy": r["accuracy"], "fit_seconds": r["fit_seconds"], "wall_seconds": r["fit_seconds"],
            "trainable_params": r["trainable_params"], "steps": r["steps"], "params": r.get("params", {}),
            "n_train": r["n_train"], "n_test": r["n_test"], "model_identity": exp.get("model_identity"),
            "backend": exp.get("backend")}
    if "queries" in r:
        cell["queries"] = r["queries"]
    if r.get("training"):
        cell["training"] = r["training"]
    return cell


def header_machines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x["machine"] for x in lines if x.get("type") == "header"]


def stored(stem: Path, records: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Cells stored under ``stem`` (STEM.json converted, then STEM/results.jsonl unless ``records`` is
    false) and what else was stored: machines, missing runs, the records' test size."""
    cells: list[dict[str, Any]] = []
    info: dict[str, Any] = {"machines": []}
    legacy = stem.with_suffix(".json")
    if legacy.exists():
        data = json.loads(legacy.read_text(encoding="utf-8"))
        exps = data["experiments"] if isinstance(data, dict) else data
        cells += as_cells(exps)
        if isinstance(data, dict):
            info["machines"].append(data["machine"])
            info["missing"] = data.get("missing")
        else:
            info["machines"] += [e["machine"] for e in exps if "machine" in e]
    jsonl = stem / "results.jsonl"
    if records and jsonl.exists():
        lines = read_results(jsonl)
        cells += as_cells(lines)
        info["machines"] += header_machines(lines)
        info["test_size"] = next((x["config"]["test_size"] for x in lines if x.get("type") == "header"), None)
    return cells, info


def machines_line(machines: list[dict[str, Any]]) -> str | None:
    distinct = list(dict.fromkeys(json.dumps(m) for m in machines))
    return "; ".join(distinct) if distinct else None


def settings_from(cells: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> None:
    """Fill ``args`` with what the stored runs used (steps, batch size, dev checks, test size, machine)."""
    for key, attr in (("steps", "steps"), ("batch_size", "batch_size"), ("eval_every", "eval_every")):
        values = {c.get("params", {}).get(key) for c in cells}
        if len(values) == 1 and None not in values:
            setattr(args, attr, values.pop())
    args.test_size = info.get("test_size") or max(c["n_test"] for c in cells)
    args.machine = machines_line(info["machines"])
    if info.get("missing"):
        args.missing = info["missing"]


def summarise(cells: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Per (task, shots, test size), in order of first appearance: seeds, test size and per method the accuracy
    mean and sample std over seeds, mean training time, trainable parameters and mean final training loss. A
    cell recorded twice (same model, task, shots, seed, method and test size) counts once, with its last
    result; runs on test subsets of different sizes are never mixed."""
    latest: dict[tuple, dict[str, Any]] = {}
    for c in cells:
        latest[(c["model"], c.get("task_name", c["task"]), c["shots"], c["seed"], c["method"], c["n_test"])] = c
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for c in latest.values():
        groups.setdefault((c.get("task_name", c["task"]), c["shots"], c["n_test"]), []).append(c)
    out = {}
    for key, cs in groups.items():
        methods = {}
        for m in [*METHODS, *dict.fromkeys(c["method"] for c in cs if c["method"] not in METHODS)]:
            rr = [c for c in cs if c["method"] == m]
            if not rr:
                continue
            accs = np.array([c["accuracy"] for c in rr])
            losses = [loss for c in rr if (loss := (c.get("training") or {}).get("final_loss")) is not None]
            methods[m] = {"mean": float(accs.mean()), "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
                          "fit_seconds_mean": float(np.mean([c["fit_seconds"] for c in rr])),
                          "n_seeds": len(accs), "trainable_params": rr[0]["trainable_params"],
                          "final_loss_mean": float(np.mean(losses)) if len(losses) == len(rr) else None}
        out[key] = {"seeds": sorted({c["seed"] for c in cs}), "n_test": cs[0]["n_test"], "methods": methods}
    return out


# -- report ------------------------------------------------------------------------------------------------------
def cell(summary: dict | None, n_seeds: int) -> str:
    """mean ± std, or the single value; the number of seeds when it is not the row's."""
    if summary is None:
        return "—"
    n = summary.get("n_seeds", n_seeds)
    text = pct(summary["mean"], summary["std"]) if n > 1 else f"{100 * summary['mean']:.1f}"
    return text if n == n_seeds and n > 1 else f"{text} ({n} seed{'s' if n > 1 else ''})"


def render(cells: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown from cell records (see :func:`as_cells` for stored results). ``args`` may carry ``machine``
    (where the runs were made, default: here), ``eval_every``, ``note`` and ``missing``."""
    machine = getattr(args, "machine", None) or json.dumps(machine_info())
    if not isinstance(machine, str):
        machine = json.dumps(machine)
    eval_every = getattr(args, "eval_every", None) or max(1, args.steps // 3)
    groups = summarise(cells)
    lines = [f"# Input-edge methods at a matched budget · {args.model}", "", f"Machine: {machine}"]
    if getattr(args, "note", ""):
        lines += ["", args.note]
    lines += ["",
              f"Training: {args.steps} AdamW steps of {args.batch_size} examples (linear warm-up 10 %, decay), dev "
              f"split of 8 per class drawn from the train pool and checked every {eval_every} steps, best dev "
              "checkpoint kept (no dev split where the pool has no examples left, e.g. CB's neutral class: then "
              "the last step); reference learning rates (prompt 0.3, ADePT network / DePT offsets 1e-4, LoRA "
              f"5e-4). Test: a seeded random subset of {args.test_size} (the full set where smaller). Accuracy "
              "in %, mean ± sample std over seeds.", "",
              "| task | shots | seeds | " + " | ".join(display_name(m) for m in METHODS) + " |",
              "|---|---:|---|" + "---:|" * len(METHODS)]
    for (task, shots, _), g in groups.items():
        s = g["methods"]
        lines.append(f"| {task} (n={g['n_test']}) | {shots} | {g['seeds']} | " +
                     " | ".join(cell(s.get(m), len(g["seeds"])) for m in METHODS) + " |")
    lines += ["", "| method | trainable params | mean training time per run (s) | mean final training loss |",
              "|---|---:|---:|---:|"]
    for m in METHODS:
        have = [g["methods"][m] for g in groups.values() if m in g["methods"]]
        if not have:
            continue
        mean_time = sum(h["fit_seconds_mean"] for h in have) / len(have)
        losses = [h["final_loss_mean"] for h in have if h.get("final_loss_mean") is not None]
        loss = f"{sum(losses) / len(losses):.3f}" if losses else "—"
        lines.append(f"| {display_name(m)} | {have[0]['trainable_params']:,} | {mean_time:.0f} | {loss} |")
    if getattr(args, "missing", None):
        lines += ["", f"Not finished before the session's deadline (not run, not estimated): {args.missing}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
