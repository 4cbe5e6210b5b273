"""Choosing the input-edge recipe on data drawn from the train pools only (never a test set).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/input_edge_recipe.py [--tasks sst2 trec]
            [--methods adept pt] [--seeds 0] [--steps 40] [--ratios 0.03 0.1 0.3] [--paper]
            [--inits vocab text]

For each task a validation split (``--val-shots`` per class, seeded) is held out of the train pool; the
rest of the pool is what the few-shot sample and each method's own dev split are drawn from. Every
(method, soft-prompt learning rate) runs as cells of edgetune's runner on that task, scored on the held-out
validation split. The learning rate is ``lr_prompt="auto"`` scaled by a ratio to the backbone's
embedding scale (``--ratios``), plus the papers' T5 value 0.3 as given (``--paper``); ``--inits``
also compares how the soft prompt starts (``prompt_init``: vocab, text, ...; vocab is the cells' label
without a suffix, so earlier vocab cells are reused). Methods without a soft prompt (LoRA) compare plain
learning rates (``--lrs``).

Writes benchmarks/results/input_edge_recipe/results.jsonl (records, resumable) and
benchmarks/results/input_edge_recipe.md: validation accuracy per ratio, the dev accuracy at the start
(step 0) and at the chosen step, and ADePT's offset ratio ‖offset(e)‖/‖e‖.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console

from edgetune.bench import BenchConfig, MethodEntry, read_results, run_bench
from edgetune.bench.report import pct
from edgetune.data import load_task
from edgetune.data.sampling import sample_k_per_class
from edgetune.data.tasks import custom_task
from edgetune.methods import display_name, get_method

HERE = Path(__file__).resolve().parent


def held_out_task(name: str, val_shots: int, folder: Path):
    """The task with its train pool split into (pool minus validation, validation) as JSONL files."""
    task = load_task(name)
    pool = task.load("train")
    val = sample_k_per_class(pool, val_shots, seed=20_000)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", pool.excluding(val)), ("test", val)):
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for e in rows:
                fh.write(json.dumps({"text": e.text, "text_b": e.text_b, "label": e.label}) + "\n")
    cols = {"text": "text", "label": "label"}
    if task.template.count("{text_b}"):
        cols["text_b"] = "text_b"
    return custom_task(f"{name}-val", task.template, task.label_words, {"train": str(folder / "train.jsonl"),
                                                                        "test": str(folder / "test.jsonl")},
                       cols, labels=task.labels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "trec"])
    ap.add_argument("--methods", nargs="+", default=["adept", "pt"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.03, 0.1, 0.3])
    ap.add_argument("--paper", action="store_true", help="also run the papers' lr 0.3 as given")
    ap.add_argument("--lrs", nargs="+", type=float, default=[5e-4, 2e-3],
                    help="learning rates to compare for methods without a soft prompt (LoRA)")
    ap.add_argument("--inits", nargs="+", default=["vocab"], help="prompt_init values to compare")
    ap.add_argument("--val-shots", type=int, default=32)
    ap.add_argument("--out", default=str(HERE / "results" / "input_edge_recipe"))
    ap.add_argument("--render", action="store_true", help="only re-render the table from the records")
    args = ap.parse_args()
    out = Path(args.out)
    if not args.render:
        entries = []
        for m in args.methods:
            base = {"steps": args.steps, "eval_every": args.eval_every}
            if "prompt_lr_ratio" not in get_method(m).param_names():  # LoRA: a plain learning rate
                entries += [MethodEntry(m, f"{m} lr={lr:g}", {**base, "lr": lr}) for lr in args.lrs]
                continue
            for init in args.inits:
                suffix, extra = ("", {}) if init == "vocab" else (f" init={init}", {"prompt_init": init})
                entries += [MethodEntry(m, f"{m} ratio={r:g}{suffix}", {**base, "prompt_lr_ratio": r, **extra})
                            for r in args.ratios]
            if args.paper:
                entries.append(MethodEntry(m, f"{m} lr=0.3 (paper)", {**base, "lr_prompt": 0.3}))
        with tempfile.TemporaryDirectory() as tmp:
            tasks = [held_out_task(t, args.val_shots, Path(tmp) / t) for t in args.tasks]
            config = BenchConfig(name="input_edge_recipe", tasks=tasks, methods=entries, shots=[args.shots],
                                 seeds=args.seeds, test_size=None, order="task-first")
            run_bench(config, out, console=Console(stderr=True))
    text = render(read_results(out / "results.jsonl")) + CONCLUSION
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


CONCLUSION = """
**Reading (sst2 and trec, 16-shot, 60 steps, seeds 0-1; validation = 32 per class held out of the train
pool).** With the learning rate scaled to SmolLM2's embeddings (std 0.136) both methods learn on both
tasks: dev accuracy 50 → 75-83 % (sst2) and 31-41 → 75-83 % (trec). With the papers' T5 rate (0.3 as given)
ADePT never beats its start on either task and prompt tuning fails on trec (the start checkpoint is kept,
so they end at their start). Pooled validation accuracy by ratio: 0.03 → 74.0 %, 0.1 → 75.7 %, 0.3 → 76.6 %
(papers' rate 51.4 %, seed 0 only); the rule (highest pooled mean, fixed before seed 1 ran) picks 0.3, the
default (`PROMPT_LR_RATIO`); 0.1 and 0.3 are within noise of each other. ADePT's network moves token
embeddings by 1.5-2 % of their norm (offset ratio) — it learns, but little, at its published rate 1e-4.
Train-time column: seconds of training per run (one ADePT cell shared the CPU with the test suite).

**Soft-prompt initialisation (ratio 0.3, same data, seeds 0-1; `--inits vocab text`).** Pooled over
ADePT and prompt tuning × sst2, trec × 2 seeds: text 77.7 %, vocab 76.6 % — equal within noise, but text
spreads less (ADePT 71.9-82.8 vs 69.8-84.4; prompt tuning 75.5-79.7 vs 68.8-84.4) and on sst2 reaches
its dev plateau by step 10-20. The same rule (highest pooled mean) picks text: the default for ADePT,
DePT and prompt tuning (the ADePT/DePT references' own default). Both starts score about chance on dev
at step 0 (50 % sst2, 21-41 % trec), below zero-shot: a 60-token prefix of any kind disturbs the model.

**LoRA's learning rate (`--methods lora --lrs 5e-4 2e-3`).** At the budget-matched rank (r = 1 on q/v)
and 60 steps, 5e-4 had not converged on trec (dev still climbing, final loss 1.07): pooled 66.7 % vs
76.4 % for 2e-3, which becomes LoRA's default.
"""


def render(lines: list[dict]) -> str:
    header = next(x for x in lines if x["type"] == "header")
    cells = {}
    for c in lines:
        if c["type"] == "cell":
            cells[(c["task"], c["method"], c["seed"])] = c
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (task, label, _), c in cells.items():
        groups[(task, label)].append(c)
    md = ["# Input-edge recipe: the soft prompt's learning rate, chosen on held-out train-pool data", "",
          f"Machine: {json.dumps(header['machine'])}", "",
          "Validation = a seeded split of the train pool held out from sampling (never a test set); dev = "
          "each method's own k-per-class split (checkpoint choice). `ratio=r`: lr_prompt = r × the std of the "
          "backbone's input-embedding elements. Accuracy in %, mean ± std over seeds.", "",
          "| task | method | lr | validation acc | dev acc at step 0 → chosen (step) | offset ratio | "
          "final loss | train s | seeds |", "|---|---|---|---:|---|---:|---:|---:|---:|"]
    for (task, label), cs in sorted(groups.items()):
        acc = np.array([c["accuracy"] for c in cs])
        tr = [c.get("training", {}) for c in cs]
        start = [t["dev_accuracy"][0][1] for t in tr if t.get("dev_accuracy") and t["dev_accuracy"][0][0] == 0]
        best = [t.get("best_dev_accuracy") for t in tr if t.get("best_dev_accuracy") is not None]
        steps = [t.get("best_step") for t in tr if t.get("best_step") is not None]
        ratio = [t["offset_ratio"] for t in tr if t.get("offset_ratio") is not None]
        lrs = sorted({round(v, 5) for t in tr for v in (t.get("lr") or {}).values()})
        offset = f"{np.mean(ratio):.3f}" if ratio else "—"
        md.append(f"| {task} | {display_name(cs[0]['name'])} | {label.split(' ', 1)[1]} ({', '.join(map(str, lrs))}) "
                  f"| {pct(acc.mean(), acc.std(ddof=1) if len(acc) > 1 else 0.0)} | "
                  f"{100 * np.mean(start):.1f} → {100 * np.mean(best):.1f} (step {', '.join(map(str, steps))}) | "
                  f"{offset} | {np.mean([t['final_loss'] for t in tr]):.3f} | "
                  f"{np.mean([c['fit_seconds'] for c in cs]):.0f} | {len(cs)} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
