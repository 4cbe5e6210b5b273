"""ADePT vs DePT vs prompt tuning vs LoRA at a matched trainable budget (100-token prompt tuning).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/input_edge_accuracy.py \
            [--tasks sst2 cb] [--shots 16] [--seeds 0 1 2] [--steps 30] [--test-size 100]

Every method trains with the same trainer, sample, dev split and step budget, and is scored on the same
seeded test subset. CPU-sized: the step budget is far below the papers' (tens of thousands of steps);
the script states what it ran. Writes benchmarks/results/input_edge_accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgetune.backends import LocalBackend
from edgetune.bench.experiment import machine_info, run_input_edge
from edgetune.bench.report import NAMES, pct
from edgetune.data import load_task

METHODS = ("adept", "dept", "pt", "lora")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "cb"])
    ap.add_argument("--shots", nargs="+", type=int, default=[16])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--test-size", type=int, default=100)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "input_edge_accuracy"))
    ap.add_argument("--append", action="store_true", help="add to the results already stored in --out")
    args = ap.parse_args()

    backend = LocalBackend.load(args.model, progress=False)
    params = {"steps": args.steps, "batch_size": args.batch_size, "eval_every": max(1, args.steps // 3),
              "dev_shots": 8, "progress": False}
    out = Path(args.out)
    done = json.loads(out.with_suffix(".json").read_text()) if args.append and out.with_suffix(".json").exists() else []
    for name in args.tasks:
        for shots in args.shots:
            exp = run_input_edge(load_task(name), backend, shots, args.seeds, METHODS, args.test_size,
                                 method_params={m: params for m in METHODS})
            done.append(exp.to_dict())
            s = exp.summary()
            print(f"{name} {shots}-shot: " + " · ".join(f"{m} {pct(v['mean'], v['std'])}" for m, v in s.items()),
                  flush=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(done, indent=2), encoding="utf-8")
            tmp.replace(out.with_suffix(".json"))  # keep what is done
            out.with_suffix(".md").write_text(render(done, args), encoding="utf-8")
    print(render(done, args))


def cell(summary: dict | None, n_seeds: int) -> str:
    """mean ± std, or the single value; the number of seeds when it is not the row's."""
    if summary is None:
        return "—"
    n = summary.get("n_seeds", n_seeds)
    text = pct(summary["mean"], summary["std"]) if n > 1 else f"{100 * summary['mean']:.1f}"
    return text if n == n_seeds and n > 1 else f"{text} ({n} seed{'s' if n > 1 else ''})"


def render(done: list[dict], args: argparse.Namespace) -> str:
    """Markdown from the stored results (dicts as written to the JSON file). ``args`` may carry
    ``machine`` (where the runs were made, default: here), ``eval_every``, ``note`` and ``missing``."""
    machine = getattr(args, "machine", None) or machine_info()
    eval_every = getattr(args, "eval_every", None) or max(1, args.steps // 3)
    lines = [f"# Input-edge methods at a matched budget · {args.model}", "", f"Machine: {json.dumps(machine)}"]
    if getattr(args, "note", ""):
        lines += ["", args.note]
    lines += ["",
              f"Training: {args.steps} AdamW steps of {args.batch_size} examples (linear warm-up 10 %, decay), dev "
              f"split of 8 per class drawn from the train pool and checked every {eval_every} steps, best dev "
              "checkpoint kept (no dev split where the pool has no examples left, e.g. CB's neutral class: then "
              "the last step); reference learning rates (prompt 0.3, ADePT network / DePT offsets 1e-4, LoRA "
              f"5e-4). Test: a seeded random subset of {args.test_size} (the full set where smaller). Accuracy "
              "in %, mean ± sample std over seeds.", "",
              "| task | shots | seeds | " + " | ".join(NAMES[m] for m in METHODS) + " |",
              "|---|---:|---|" + "---:|" * len(METHODS)]
    for exp in done:
        s = exp["summary"]
        lines.append(f"| {exp['task']} (n={exp['n_test']}) | {exp['shots']} | {exp['seeds']} | " +
                     " | ".join(cell(s.get(m), len(exp["seeds"])) for m in METHODS) + " |")
    lines += ["", "| method | trainable params | mean training time per run (s) | mean final training loss |",
              "|---|---:|---:|---:|"]
    for m in METHODS:
        have = [e["summary"][m] for e in done if m in e["summary"]]
        if not have:
            continue
        mean_time = sum(h["fit_seconds_mean"] for h in have) / len(have)
        losses = [h["final_loss_mean"] for h in have if h.get("final_loss_mean") is not None]
        loss = f"{sum(losses) / len(losses):.3f}" if losses else "—"
        lines.append(f"| {NAMES[m]} | {have[0]['trainable_params']:,} | {mean_time:.0f} | {loss} |")
    if getattr(args, "missing", None):
        lines += ["", f"Not finished before the session's deadline (not run, not estimated): {args.missing}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
