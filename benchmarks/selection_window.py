"""What the dev-accuracy window of the checkpoint rule does to *test* accuracy, paired on the same runs.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/selection_window.py run
            [--results benchmarks/results/input_edge_table_gpu/results.jsonl] [--limit N]
        python benchmarks/selection_window.py render

The GPU tables were chosen by the plain loss rule (lowest dev loss among checks at least as accurate on dev as
the start); the rule now also requires a check within two dev examples of the most accurate one
(:func:`edgetune.methods.core.trainers.choose`). No test score is kept per check, so the stored tables cannot say
what the window does on test. ``run`` finds the cells of a stored bench whose pick the window changes
(recomputed from their stored dev curves), reruns each on this machine with the bench's own sample and test
subset (same config, same seed), keeps the trainable weights at every dev check, and scores the test subset at
the check each rule picks *on the rerun's own dev curve* (a CPU rerun does not retrace a GPU run exactly, so the
two rules may agree there; such runs count as a zero difference). The rules are fixed before any test score is
seen; this measures them, it does not tune them. Writes ``results/selection_window.{jsonl,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "selection_window.jsonl"
DEFAULT = HERE / "results" / "input_edge_table_gpu" / "results.jsonl"
PLAIN, WINDOW = "plain loss rule", "loss rule with the accuracy window (edgetune)"


def _picks(acc: list[float], loss: list[float], n_dev: int) -> tuple[int, int]:
    from edgetune.methods.core.trainers import choose

    checks = [(i, a, l_, None) for i, (a, l_) in enumerate(zip(acc, loss, strict=True))]
    plain = min((i for i in range(len(acc)) if acc[i] >= acc[0]), key=lambda i: loss[i])
    return plain, choose(checks, "loss", n_dev)


def changed_cells(path: Path) -> list[dict]:
    """Cells of a stored bench whose checkpoint the window would change."""
    from edgetune.data.tasks import load_task

    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        tr = r.get("training") if r.get("type") == "cell" else None
        if not tr or "dev_loss" not in tr:
            continue
        acc = [a for _, a in tr["dev_accuracy"]]
        loss = [v for _, v in tr["dev_loss"]]
        n_dev = 16 * len(load_task(r["task"]).labels)  # the dev split: 16 per class (capped by the pool)
        plain, window = _picks(acc, loss, n_dev)
        if plain != window:
            out.append(r)
    return out


def run(args: argparse.Namespace) -> None:
    import torch

    from edgetune.backends import FeatureCache, load_backend
    from edgetune.data.sampling import subsample
    from edgetune.data.tasks import load_task
    from edgetune.methods import get_method

    torch.set_num_threads(2)
    done = set()
    if OUT.exists():
        done = {(r["task"], r["method"], r["seed"]) for r in map(json.loads, OUT.read_text().splitlines())}
    cells = [c for c in changed_cells(Path(args.results)) if (c["task"], c["method"], c["seed"]) not in done]
    print(f"{len(cells)} cells to rerun", flush=True)
    backend = load_backend("smollm2-135m", cache=FeatureCache(None), progress=False)
    for c in cells[: args.limit]:
        task = load_task(c["task"])
        full = task.load("test")
        test = subsample(full, 500, 0) if len(full) > 500 else full
        train = task.sample(c["shots"], c["seed"])
        m = get_method(c["name"])(backend, **{**c["params"], "progress": False})
        states: list[dict] = []

        def keep(step: int, info: dict, m=m, states=states) -> None:  # the trainer's callback at every dev check
            states.append(copy.deepcopy({k: v.detach().cpu() for k, v in m.trainable_state().items()}))

        m.on_check = keep
        t0 = time.perf_counter()
        m.fit(train)
        h = m.history_
        acc = [a for _, a in h["dev_accuracy"]]
        loss = [v for _, v in h["dev_loss"]]
        plain, window = _picks(acc, loss, m.dev_size_)
        y = np.array(test.label_ids())
        test_acc = {}
        for name, i in ((PLAIN, plain), (WINDOW, window)):
            m.module_.load_state_dict(states[i], strict=False)
            test_acc[name] = float((np.asarray(m.class_scores(test)).argmax(1) == y).mean()) \
                if name == PLAIN or i != plain else test_acc[PLAIN]
        gpu_tr = c["training"]
        rec = {"task": c["task"], "method": c["method"], "seed": c["seed"], "params": c["params"],
               "dev_accuracy": acc, "dev_loss": loss, "picks": {PLAIN: plain, WINDOW: window},
               "test_accuracy": test_acc, "stored": {"accuracy": c["accuracy"], "dev_accuracy": gpu_tr["dev_accuracy"],
                                                     "best_step": gpu_tr["best_step"]},
               "seconds": time.perf_counter() - t0, "torch": torch.__version__}
        with OUT.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(c["task"], c["method"], c["seed"], rec["picks"], test_acc, f"{rec['seconds']:.0f}s", flush=True)


def render(_: argparse.Namespace) -> None:
    runs = [json.loads(x) for x in OUT.read_text(encoding="utf-8").splitlines() if x.strip()]
    diffs = np.array([100 * (r["test_accuracy"][WINDOW] - r["test_accuracy"][PLAIN]) for r in runs])
    moved = [r for r in runs if r["picks"][PLAIN] != r["picks"][WINDOW]]
    lines = ["# The checkpoint rule's accuracy window, judged on test (paired reruns)", "",
             "`python benchmarks/selection_window.py run` then `render` — the cells of the GPU input-edge table whose "
             "pick the window changes (recomputed from their stored dev curves), rerun on this CPU with the bench's "
             "sample and 500-example test subset; test accuracy (%) at each rule's pick on the rerun's own dev curve.",
             "",
             f"{len(runs)} reruns; the rules picked different checks on {len(moved)} of them. Window − plain: "
             f"{diffs.mean():+.2f} ± {diffs.std(ddof=1) if len(diffs) > 1 else 0:.2f} points per run "
             f"(mean ± std; better on {(diffs > 0).sum()}, worse on {(diffs < 0).sum()}).", "",
             "| run | dev accuracy at each check | plain pick | window pick | test plain | test window |",
             "|---|---|---:|---:|---:|---:|"]
    for r in runs:
        steps = [s for s, _ in r["stored"]["dev_accuracy"]]
        lines.append(f"| {r['task']} {r['method']} seed {r['seed']} | "
                     f"{' '.join(f'{100 * a:.0f}' for a in r['dev_accuracy'])} | step {steps[r['picks'][PLAIN]]:.0f} | "
                     f"step {steps[r['picks'][WINDOW]]:.0f} | {100 * r['test_accuracy'][PLAIN]:.1f} | "
                     f"{100 * r['test_accuracy'][WINDOW]:.1f} |")
    (OUT.with_suffix(".md")).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--results", default=str(DEFAULT))
    r.add_argument("--limit", type=int, default=None)
    sub.add_parser("render")
    args = ap.parse_args()
    {"run": run, "render": render}[args.cmd](args)


if __name__ == "__main__":
    main()
