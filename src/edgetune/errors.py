"""User-facing errors.

Every error a user can cause (bad data, a label word the model cannot score in one token, a saved
decoder from another model, ...) is an :class:`EdgetuneError` with a one-line message saying what is
wrong and how to fix it. The CLI prints it as ``error: <message>`` and exits with status 2.
"""

from __future__ import annotations


class EdgetuneError(Exception):
    """Base class of all errors caused by user input or environment."""


class DataError(EdgetuneError):
    """A data directory, file, column, label or text is missing or malformed."""


class LabelWordError(EdgetuneError):
    """A label word is not a single token of the model's vocabulary."""


class ModelError(EdgetuneError):
    """A model cannot be found, converted or loaded."""


class IncompatibleError(EdgetuneError):
    """A saved decoder or adapter was made for a different model or task."""
