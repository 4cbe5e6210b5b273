"""Adaptation methods, one module each, registered by name (see :data:`METHODS`)."""

from . import dect, linear_probe, zeroshot  # noqa: F401  (registers the methods)
from .base import METHODS, Method, OutputEdgeMethod, get_method, load, register
from .dect import DecT
from .linear_probe import LinearProbe
from .zeroshot import CalibratedZeroShot, ZeroShot

__all__ = ["METHODS", "CalibratedZeroShot", "DecT", "LinearProbe", "Method", "OutputEdgeMethod", "ZeroShot",
           "get_method", "load", "register"]
