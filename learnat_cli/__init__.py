"""learnat: LearNAT (arXiv 2504.02327) as a toolkit.

The library core. Nothing in this package imports typer or rich; the CLI lives in ``commands/`` (installed as
``learnat_commands``). The Python API is the eight stage functions, one per subcommand, each records in ->
records out plus a report (docs/CONTRACTS.md)::

    from learnat_cli import decompose, score, build_pairs, sft, mdpo, index, ask, evaluate

They and the records (``from learnat_cli import Example, Prediction``) are loaded lazily on first use, so
``import learnat_cli`` loads none of torch, transformers, trl, faiss, typer or rich.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# API name -> stage module (learnat_cli.stages.<module>); ``evaluate`` is the ``eval`` stage (not shadowing
# the builtin).
STAGES = {"decompose": "decompose", "score": "score", "build_pairs": "build_pairs", "sft": "sft",
          "mdpo": "mdpo", "index": "index", "ask": "ask", "evaluate": "eval"}
RECORDS = ("Example", "Step", "Trajectory", "TreeNode", "TreeRecord", "PreferencePair", "ChatMessage",
           "SftRow", "Prediction", "EvalResult", "EvalReport")

__all__ = ["__version__", "LearnatError", *STAGES, *RECORDS]


def __getattr__(name: str) -> Any:
    if name == "LearnatError":
        from learnat_cli.errors import LearnatError

        return LearnatError
    if name in RECORDS:
        return getattr(importlib.import_module("learnat_cli.records"), name)
    if name in STAGES:
        mod = importlib.import_module(f"learnat_cli.stages.{STAGES[name]}")
        for attr in (name, STAGES[name], "run"):
            fn = getattr(mod, attr, None)
            if callable(fn) and not isinstance(fn, type):
                globals()[name] = fn
                return fn
        raise AttributeError(f"learnat_cli.stages.{STAGES[name]} does not define the stage function {name}()")
    raise AttributeError(f"module 'learnat_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
