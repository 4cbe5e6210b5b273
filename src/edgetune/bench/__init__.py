"""Evaluation: configs, the one runner, the one record format and the reports that read it."""

from .config import BenchConfig, MethodEntry
from .records import ResultsLog, read_results
from .runner import run_bench

__all__ = ["BenchConfig", "MethodEntry", "ResultsLog", "read_results", "run_bench"]
