"""What the method registry holds, readable without importing any method (so without torch).

The registry (:data:`edgetune.methods.METHODS`) is the only list of methods; importing it loads torch,
transformers and scikit-learn, which takes seconds. The command line needs only the registry's
*description* to parse arguments and answer ``--help`` — each method's name, class, display name, edge and
constructor parameters with their defaults — so that description is kept next to this module as
``catalog.json``, written from the live registry by::

    python -m edgetune.methods          # rewrite catalog.json from the registry

and checked against it by the test suite (a method added, removed or changed without rewriting the
catalog fails a test that names this command). Nothing else reads it: fitting, loading and the bench
use the registry itself.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("catalog.json")


def methods() -> dict[str, dict[str, Any]]:
    """Per registry name: ``class``, ``display_name``, ``edge`` and ``params`` (name → ``default``, as JSON,
    and ``kind``: ``flag`` for booleans, ``list`` for sequences, ``value`` otherwise).

    Once the registry has been imported anyway, it is described live (so a method registered at run
    time, e.g. in a notebook or a test, is known too); before that, from ``catalog.json``."""
    if "edgetune.methods" in sys.modules:
        return build()["methods"]
    return _stored()


@cache
def _stored() -> dict[str, dict[str, Any]]:
    return json.loads(PATH.read_text(encoding="utf-8"))["methods"]


def class_names() -> dict[str, str]:
    """Class name → registry name, for every registered method."""
    return {spec["class"]: name for name, spec in methods().items()}


def build() -> dict[str, Any]:
    """The catalog of the live registry (imports every method)."""
    from .methods import METHODS

    out: dict[str, dict[str, Any]] = {}
    for name, cls in sorted(METHODS.items()):
        params = {}
        for pname, p in cls.init_parameters().items():
            default = p.default
            annotation = str(p.annotation)
            if isinstance(default, bool):
                kind = "flag"
            elif isinstance(default, tuple | list) or "list[" in annotation or "tuple[" in annotation:
                kind = "list"
            else:
                kind = "value"
            params[pname] = {"default": list(default) if isinstance(default, tuple) else default, "kind": kind}
        out[name] = {"class": cls.__name__, "display_name": cls.display_name, "edge": cls.edge, "params": params}
    return {"about": "written by `python -m edgetune.methods` from the method registry; do not edit", "methods": out}


def text(catalog: dict[str, Any]) -> str:
    return json.dumps(catalog, indent=1, sort_keys=True) + "\n"


def write() -> Path:
    PATH.write_text(text(build()), encoding="utf-8")
    return PATH
