"""Does an input-edge method fit one training sample? Training loss and dev accuracy only (no test set).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/fit_probe.py run --task sst2 --seed 2 --method adept
            [--params '{"lr_network": 1e-3}'] [--tag NAME] [--shots 16] [--held-out N]
        python benchmarks/fit_probe.py render

Trains ``--method`` on the bench's ``--shots``-shot sample ``--seed`` of ``--task`` (the sample the input-edge
table trains on) with the table's settings (60 steps of 8, a dev check every 10) plus ``--params``, and
appends the run's training-loss curve, dev curve, chosen check and rollbacks to
``results/fit_probe.jsonl``. Everything it reads is the train pool (the sample and its dev split): a
diagnosis of under-fitting that never looks at test data. ``render`` writes ``results/fit_probe.md``.

``--held-out N`` checks on N train-pool examples outside the sample and outside the bench's dev split instead
(with ``"rollback": null`` the weights follow the bench run's path when that run rolled nothing back): the
accuracy of every check on data the small dev split never saw — is a seed's low test score the dev split
choosing a bad check, or a bad run?
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "results" / "fit_probe.jsonl"


def run(args: argparse.Namespace) -> None:
    from edgetune.backends import FeatureCache, load_backend
    from edgetune.data import load_task, subsample
    from edgetune.methods import get_method

    backend = load_backend("smollm2-135m", cache=FeatureCache(None), progress=False)
    task = load_task(args.task)
    params = {"steps": 60, "eval_every": 10, **json.loads(args.params)}
    m = get_method(args.method)(backend, seed=args.seed, progress=False, **params)
    sample = task.sample(args.shots, args.seed)
    dev = None
    if args.held_out:
        rest = task.load("train").excluding(sample, m.dev_split(sample) or ())
        dev = subsample(rest, args.held_out, args.seed + 20_000)
    t0 = time.perf_counter()
    m.fit(sample, dev=dev)
    h = m.history_
    rec = {"task": args.task, "seed": args.seed, "shots": args.shots, "method": args.method,
           "params": json.loads(args.params), "tag": args.tag, "held_out": args.held_out,
           "loss": h["loss"], "dev_accuracy": h["dev_accuracy"],
           "best_step": h.get("best_step"), "rollbacks": h.get("rollbacks", []),
           "offset_ratio": h.get("offset_ratio"), "seconds": time.perf_counter() - t0}
    with RECORDS.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(render_row(rec), flush=True)


def render_row(r: dict) -> str:
    loss = np.array(r["loss"])
    windows = " ".join(f"{loss[i:i + 10].mean():.2f}" for i in range(0, len(loss), 10))
    dev = " ".join(f"{100 * a:.0f}" for _, a in r["dev_accuracy"])
    ratio = f"{r['offset_ratio']:.3f}" if r.get("offset_ratio") is not None else ""
    return (f"| {r['task']} seed {r['seed']} | {r['method']} | {r['tag'] or json.dumps(r['params'])} | {windows} | "
            f"{dev} | {r['best_step']} | {ratio} | {r['seconds']:.0f} |")


def render(_: argparse.Namespace) -> None:
    runs = [json.loads(x) for x in RECORDS.read_text(encoding="utf-8").splitlines() if x.strip()]
    lines = ["# Does the method fit its training sample? (train-pool data only)", "",
             "`python benchmarks/fit_probe.py` — SmolLM2-135M on this CPU, the input-edge table's 16-shot samples, "
             "60 steps of 8 unless the variant says otherwise. Training loss: mean of each 10 steps. Dev: accuracy "
             "(%) at each check (the start first).", "",
             "| sample | method | variant | training loss per 10 steps | dev accuracy per check | chosen step | "
             "offset ratio | s |", "|---|---|---|---|---|---:|---:|---:|"]
    lines += [render_row(r) for r in runs]
    RECORDS.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--task", required=True)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--method", default="adept")
    r.add_argument("--shots", type=int, default=16)
    r.add_argument("--params", default="{}", help="method parameters as JSON")
    r.add_argument("--tag", default="")
    r.add_argument("--held-out", type=int, default=0, help="check on N pool examples outside sample and dev split")
    sub.add_parser("render")
    args = ap.parse_args()
    {"run": run, "render": render}[args.command](args)


if __name__ == "__main__":
    main()
