"""Experiments and reports."""

from .experiment import Experiment, RunResult, run_input_edge, run_output_edge, write_json

__all__ = ["Experiment", "RunResult", "run_input_edge", "run_output_edge", "write_json"]
