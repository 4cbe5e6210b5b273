"""Every committed bench report re-renders, byte for byte, from its committed records (``edgetune bench --report``):
the numbers in the README and benchmarks/results come from records, not from hand edits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgetune.bench.report import render

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
REPORTS = sorted(p.parent for p in RESULTS.rglob("report.md") if (p.parent / "results.jsonl").exists())
PLOTS = "\n## Plots\n"


def test_there_are_committed_reports():
    assert len(REPORTS) >= 15


@pytest.mark.parametrize("folder", REPORTS, ids=lambda p: p.name)
def test_a_committed_report_rerenders_identically(folder, tmp_path):
    shutil.copy(folder / "results.jsonl", tmp_path / "results.jsonl")
    again = render(tmp_path / "results.jsonl", plots=False).read_text(encoding="utf-8")  # plots: not compared
    committed = (folder / "report.md").read_text(encoding="utf-8")
    assert again == committed.split(PLOTS)[0]
