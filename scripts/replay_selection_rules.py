"""Replay the checks view's selection rules (``edgetune.bench.report.rule_table``) on the archived issue-12
held-out study (``benchmarks/results/archive/checkpoint_selection.jsonl``, written by a script since retired), whose
records are not bench records: per task and method, and pooled, the validation accuracy at the check each rule keeps.
Its dev split was 16 per class; its runs predate the rollback, so a rule that looks at rollbacks sees none there.
Bench results files recorded with ``eval: {split: heldout, at_checks: true}`` may be named too: their runs join the
pooled table (never a study scored on a test split: rules are chosen on train-pool data only).

    python scripts/replay_selection_rules.py [--tag TAG] [RESULTS.jsonl ...]   # default tag: the untagged runs
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from edgetune.bench.records import read_results
from edgetune.bench.report import latest_cells, rule_table

ARCHIVE = Path(__file__).resolve().parent.parent / "benchmarks/results/archive/checkpoint_selection.jsonl"
CLASSES = {"sst2": 2, "rte": 2, "trec": 6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", default="", help="the runs with this tag (default: the untagged ones)")
    ap.add_argument("results", nargs="*", help="bench results.jsonl files scored on held-out data at every check")
    args = ap.parse_args()
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in ARCHIVE.read_text().splitlines():
        r = json.loads(line)
        if r.get("tag", "") != args.tag:
            continue
        checks = list(zip(r["steps"], r["checks"], strict=True))
        groups[f"{r['task']} {r['method']}"].append({
            "dev_accuracy": [(s, c["dev_accuracy"]) for s, c in checks],
            "dev_loss": [(s, c["dev_loss"]) for s, c in checks],
            "eval_accuracy": [c["val_accuracy"] for _, c in checks], "n_dev": 16 * CLASSES[r["task"]]})
    for group, runs in groups.items():
        print(f"\n### {group} ({len(runs)} runs)\n\n" + "\n".join(rule_table(runs)))
    pooled = [t for runs in groups.values() for t in runs]
    for path in args.results:
        for cell in latest_cells(read_results(path)).values():
            t = cell.get("training") or {}
            if not t.get("eval_accuracy"):
                continue
            if ((cell.get("spec") or {}).get("eval") or {}).get("split") != "heldout":
                raise SystemExit(f"{path}: {cell['task']} was not scored on data held out of the train pool")
            pooled.append(t)
    print(f"\n### pooled ({len(pooled)} runs)\n\n" + "\n".join(rule_table(pooled)))


if __name__ == "__main__":
    main()
