"""Adaptation methods, one module each, registered by name (see :data:`METHODS`)."""

from . import adept, bbt, dect, dept, linear_probe, lora, prompt_tuning, setfit, zeroshot  # noqa: F401  (registers them)
from .adept import ADePT
from .base import METHODS, Method, OutputEdgeMethod, get_method, load, register
from .bbt import BBT
from .dect import DecT
from .dept import DePT
from .linear_probe import LinearProbe
from .lora import LoRA
from .prompt_tuning import PromptTuning
from .setfit import SetFit
from .zeroshot import CalibratedZeroShot, ZeroShot

__all__ = ["BBT", "METHODS", "ADePT", "CalibratedZeroShot", "DePT", "DecT", "LinearProbe", "LoRA", "Method",
           "OutputEdgeMethod", "PromptTuning", "SetFit", "ZeroShot", "get_method", "load", "register"]
