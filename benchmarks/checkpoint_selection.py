"""Which dev checkpoint to keep, judged on validation data held out of the train pool (never a test set).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/checkpoint_selection.py run --task sst2
            --method adept --seeds 0 1 2 [--val-shots 100] [--params '{"max_grad_norm": 1.0}'] [--tag clip1]
        python benchmarks/checkpoint_selection.py render

``run`` holds ``--val-shots`` per class out of the task's train pool (as a bench config's ``eval: {split:
heldout}`` does), trains the method on the 16-shot sample of each seed drawn from the rest (60 steps, a dev
check every 10, its own dev split of 16 per class), and at every dev check (the trainer's ``on_check``) scores
the held-out validation split too. Since choosing a checkpoint does not change the training trajectory, every
selection rule can then be compared on the same runs: the rule picks a check from the dev scores alone, and the
validation accuracy at that check says how good the pick was. ``render`` tabulates the rules over all stored
runs (``--tag`` groups runs of a variant, e.g. with gradient clipping). Writes
``results/checkpoint_selection.jsonl`` (one line per run: per check, dev accuracy and loss, validation accuracy)
and ``results/checkpoint_selection.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "results" / "checkpoint_selection.jsonl"

CLASSES = {"sst2": 2, "rte": 2, "agnews": 4, "trec": 6}  # dev split = 16 per class


def _rules(n_dev: int) -> dict:
    """Each rule: (dev accuracies, dev losses) -> the index of the check it keeps."""
    from edgetune.methods.core.trainers import choose

    def edgetune_rule(a, loss):
        return choose([(i, a[i], loss[i], None) for i in range(len(a))], "loss", n_dev)

    return {
        "dev accuracy, earliest best (the papers' rule)": lambda a, loss: int(np.argmax(a)),
        "dev accuracy, latest best": lambda a, loss: int(len(a) - 1 - np.argmax(a[::-1])),
        "dev loss, among checks ≥ the start's accuracy": lambda a, loss: int(
            min((i for i in range(len(a)) if a[i] >= a[0]), key=lambda i: loss[i])),
        "dev loss, also within 2 dev examples of the best accuracy (edgetune)": edgetune_rule,
        "last step": lambda a, loss: len(a) - 1,
    }


EDGETUNE = "dev loss, also within 2 dev examples of the best accuracy (edgetune)"
RULES = _rules(32)  # the names (the window's size depends on the task's dev split)


def run(args: argparse.Namespace) -> None:
    from edgetune import load_task
    from edgetune.backends import FeatureCache, load_backend
    from edgetune.bench.config import HELDOUT_SEED
    from edgetune.data.sampling import held_out, sample_k_per_class
    from edgetune.methods import get_method

    backend = load_backend("smollm2-135m", cache=FeatureCache(None), progress=False)
    extra = json.loads(args.params)
    task = load_task(args.task)
    val, rest = held_out(task.load("train"), args.val_shots, HELDOUT_SEED)  # as a bench's eval: heldout
    y = np.array(val.label_ids())  # in the task's label order, the order of every fitted method's labels_
    for seed in args.seeds:
        m = get_method(args.method)(backend, steps=60, eval_every=10, seed=seed, progress=False, **extra)
        checks: list[dict] = []

        def at_check(step: int, info: dict, m=m, checks=checks) -> None:
            """The trainer's callback: the weights just checked on dev are in place; score them on validation."""
            val_acc = float((np.asarray(m.class_scores(val)).argmax(1) == y).mean())
            checks.append({"dev_accuracy": info["dev_accuracy"], "dev_loss": info["dev_loss"], "val_accuracy": val_acc})

        m.on_check = at_check
        t0 = time.perf_counter()
        m.fit(sample_k_per_class(rest, 16, seed))
        rec = {"task": args.task, "method": args.method, "seed": seed, "params": extra, "tag": args.tag,
               "val_shots": args.val_shots, "steps": [s for s, _ in m.history_["dev_accuracy"]],
               "checks": checks, "train_loss": m.history_["loss"], "seconds": time.perf_counter() - t0,
               "rollbacks": m.history_.get("rollbacks", [])}
        with RECORDS.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(args.task, args.method, seed, [round(c["val_accuracy"], 3) for c in checks], flush=True)


def render(_: argparse.Namespace) -> None:
    runs = [json.loads(x) for x in RECORDS.read_text(encoding="utf-8").splitlines() if x.strip()]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        groups[r.get("tag") or "recipe"].append(r)
    lines = ["# Checkpoint selection on held-out train-pool validation", "",
             "`python benchmarks/checkpoint_selection.py` — SmolLM2-135M, 16-shot, 60 steps of 8, a dev check every "
             "10 steps (16 per class), validation = a split held out of the train pool (never a test set). "
             "Validation accuracy (%) at the check each rule picks; mean ± std over runs, worst run.", ""]
    for tag, rs in groups.items():
        cases = sorted({f"{r['task']} {r['method']}" for r in rs})
        lines += [f"## {tag}: {', '.join(cases)} ({len(rs)} runs)", "", "| rule | mean | std | worst |",
                  "|---|---:|---:|---:|"]
        for name in [*RULES, "best check in hindsight (validation)"]:
            vals = []
            for r in rs:
                a = np.array([c["dev_accuracy"] for c in r["checks"]])
                loss = np.array([c["dev_loss"] for c in r["checks"]])
                v = np.array([c["val_accuracy"] for c in r["checks"]])
                rule = _rules(16 * CLASSES[r["task"]]).get(name)
                vals.append(v.max() if rule is None else v[rule(a, loss)])
            lines.append(f"| {name} | {100 * np.mean(vals):.1f} | {100 * np.std(vals, ddof=1):.1f} | "
                         f"{100 * np.min(vals):.1f} |")
        lines += ["", "| run | validation accuracy at each check (steps " + ", ".join(map(str, rs[0]["steps"])) +
                  ") | final training loss |", "|---|---|---:|"]
        for r in rs:
            curve = " ".join(f"{100 * c['val_accuracy']:.1f}" for c in r["checks"])
            lines.append(f"| {r['task']} {r['method']} seed {r['seed']} | {curve} | "
                         f"{np.mean(r['train_loss'][-10:]):.3f} |")
        lines.append("")
    lines += ["## Per task and method: validation accuracy at edgetune's pick (mean, worst)", "",
              "| group | task | method | runs | mean | worst |", "|---|---|---|---:|---:|---:|"]
    by: dict[tuple, list[float]] = defaultdict(list)
    for r in runs:
        loss_rule = _rules(16 * CLASSES[r["task"]])[EDGETUNE]
        a = np.array([c["dev_accuracy"] for c in r["checks"]])
        loss = np.array([c["dev_loss"] for c in r["checks"]])
        by[(r.get("tag") or "recipe", r["task"], r["method"])].append(r["checks"][loss_rule(a, loss)]["val_accuracy"])
    for (tag, task, method), vals in by.items():
        lines.append(f"| {tag} | {task} | {method} | {len(vals)} | {100 * np.mean(vals):.1f} | {100 * min(vals):.1f} |")
    text = "\n".join(lines)
    RECORDS.with_suffix(".md").write_text(text + NOTES, encoding="utf-8")
    print(text)


NOTES = """
## Reading

- **Selection rule (group "recipe").** The lowest dev loss among the checks at least as accurate on dev as the
  start beats the papers' rule (earliest best dev accuracy) by 2.6 points on average and comes within 1.1 of
  the best check in hindsight. A 16-per-class dev split moves accuracy in steps of 3 %, so early, label-biased
  checks tie with or beat better later ones; the loss separates them. It was adopted after the first three
  runs (ADePT sst2 seeds 2, 0, 1) and held on the other eight. Default: `select_by="loss"`.
- **The accuracy window.** Rerunning prompt tuning on trec (the input-edge table's worst cell, on this CPU,
  `input_edge_table_clip/`) showed the plain loss rule's failure: a run that collapsed after step 10 (dev
  accuracy 42 % → 17–26 %) ends near-uniform, and a near-uniform model has a *lower* dev loss (≈ ln 6) than an
  overconfident better one, so the rule kept step 60 (dev 23 %, test 11.8 %, far below zero-shot). The rule
  now also requires a check to be within two dev examples of the most accurate one. On every held-out run
  above it picks the same checks as before (the rows are equal); on the collapsed run it keeps step 10.
- **Gradient clipping (group "clip1", max_grad_norm 1.0).** Prompt tuning's seed-2 sample collapsed after
  step 10 without clipping; with clipping the three sst2 samples score 77.5 / 77.5 / 75.5 (77 / 72 / 67
  without), and ADePT lost 4.8 points with it. Prompt tuning then clipped by default — until the trec rerun
  above, *with* clipping, collapsed on 2 of 5 seeds (the same cells without clipping: 0 of 5 on this CPU, 2
  of 5 on the GPU). Clipping does not prevent the collapse; it is off by default again (`max_grad_norm`
  stays a parameter). The collapse is a learning-rate problem at ratio 0.3 on prompt tuning, not solved here.
- **A lower rate (group "r01", prompt_lr_ratio 0.1)** also avoided prompt tuning's sst2 collapse, but its dev
  loss bottoms out early (step 10–20) and the rule picks 73.7 % on average; not adopted on 3 runs.
- **Rolling back a collapse (group "rollback", the default since 2026-11-28: `rollback=0.5`).** When a dev
  check has lost more than half of what the best check so far gained over the start (and more than two dev
  examples), training returns to that check with the learning rates halved and AdamW's moments cleared. On
  this CPU the runs are deterministic, so a run on which the rule never fires is the run without it: replayed
  on the dev curves of the 20 earlier runs above it fires on three — the collapsed prompt-tuning sst2 seed 2
  of "recipe" and two "r01" runs (a variant not used) — and on none of the other ten default-recipe runs.
  Rerun with it, that collapsed run is identical up to step 20 (validation 50 → 67 → 52 %), then goes back to
  step 10 and recovers: 73.5 / 77 / 78 / 78.5 % at steps 30–60, and edgetune's pick scores 77.0 % instead of
  67.0 %. Three prompt-tuning trec runs (seeds 0–2, validation 50 per class) did not collapse and it did not
  fire; one LoRA rte run (at chance throughout) did not fire either. The rte runs were stopped there: at 12
  min per run and chance-level accuracy they cannot show an effect. One rescued run of 14 is the evidence;
  the rule's cost is nil where it does not fire, by construction.
- **ADePT's network at 10× its published rate (group "lrnet1e-3", `lr_network=1e-3`).** Tried because ADePT
  under-fits one sample per task in the input-edge table (`fit_probe.md`: there it lowers the training loss
  from 0.55 to 0.07 on sst2 and from 0.60 to 0.39 on trec). On these held-out runs it does not help where it
  counts: at edgetune's pick 77.4 % on sst2 (5 runs, worst 72.5) against 80.1 % (worst 77.5) at 1e-4, and 74.8
  % against 74.1 % on trec (3 runs); at the last step it is 1 point higher (79.0 vs 78.1 over the 8 runs). Not
  adopted; `lr_network` stays at the paper's 1e-4.
- Three to eleven runs per group: choices on thin evidence, stated as such; each setting stays a parameter.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--task", required=True)
    r.add_argument("--method", required=True)
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--val-shots", type=int, default=100)
    r.add_argument("--params", default="{}", help="method parameters as JSON")
    r.add_argument("--tag", default="", help="a name for this variant's group in the table")
    sub.add_parser("render")
    args = ap.parse_args()
    {"run": run, "render": render}[args.command](args)


if __name__ == "__main__":
    main()
