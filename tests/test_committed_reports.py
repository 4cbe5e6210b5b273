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


MERGED = sorted(p.parent for p in RESULTS.rglob("report.md") if not (p.parent / "results.jsonl").exists()
                and "edgetune bench --report" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("folder", MERGED, ids=lambda p: p.name)
def test_a_committed_report_of_several_results_files_rerenders_identically(folder, tmp_path, monkeypatch):
    """A report made from several results files (``--report A B -o DIR``) re-renders from the command it names."""
    import re
    import shlex

    from edgetune.cli import main

    committed = (folder / "report.md").read_text(encoding="utf-8")
    command = re.search(r"re-render with `edgetune (bench --report [^`]*)`", committed).group(1)
    argv = shlex.split(command)
    out = argv[argv.index("-o") + 1]
    argv[argv.index("-o") + 1] = str(tmp_path)
    monkeypatch.chdir(RESULTS.parents[1])  # the command's paths are from the repository root
    assert main([*argv, "--no-plots"]) == 0
    again = (tmp_path / "report.md").read_text(encoding="utf-8").replace(str(tmp_path), out)
    assert again == committed.split(PLOTS)[0]


def test_there_is_a_committed_report_of_several_results_files():
    assert MERGED


def test_a_report_of_several_files_needs_its_own_folder(tmp_path):
    from edgetune.errors import EdgetuneError

    a, b = RESULTS / "input_edge_family" / "results.jsonl", RESULTS / "input_edge_table_gpu" / "results.jsonl"
    with pytest.raises(EdgetuneError, match="needs an output folder"):
        render([a, b])
    with pytest.raises(EdgetuneError, match="whose own report"):
        render([a, b], out_dir=a.parent)
    with pytest.raises(EdgetuneError, match="share the name"):
        render([f"X={a}", f"X={b}"], out_dir=tmp_path)
    text = render([f"CPU={a}", f"GPU={b}"], out_dir=tmp_path, plots=False, tasks=["sst2"], seeds=[0]).read_text()
    assert "(smollm2-135m, CPU)" in text and "(smollm2-135m, GPU)" in text and "## trec" not in text
    assert "seeds: 0 ·" in text
