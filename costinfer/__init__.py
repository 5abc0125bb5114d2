"""costinfer: run large prompt datasets through LLMs for the least money, never past the budget.

The library API: ``run(run_spec("data.jsonl", budget="5"))`` does what ``costinfer run data.jsonl --budget 5`` does
(every option of the command is a keyword of ``run_spec``); ``plan`` what ``costinfer plan`` does; ``Store`` opens
the DuckDB store.
Names are imported on first use, so that a module of the package (a worker process's) loads without the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AuthError": "costinfer.errors",
    "BackendError": "costinfer.errors",
    "BadRowError": "costinfer.errors",
    "ConfigError": "costinfer.errors",
    "CostinferError": "costinfer.errors",
    "ExitCode": "costinfer.errors",
    "InputError": "costinfer.errors",
    "StoreBusyError": "costinfer.errors",
    "StoreError": "costinfer.errors",
    "request_key": "costinfer.reading.keys",
    "RunSpec": "costinfer.spec",
    "run_spec": "costinfer.pipeline.build",
    "plan": "costinfer.pipeline.run",
    "RunSummary": "costinfer.accounting.summary",
    "run": "costinfer.pipeline.run",
    "Store": "costinfer.store",
}

__all__ = [
    "AuthError",
    "BackendError",
    "BadRowError",
    "ConfigError",
    "CostinferError",
    "ExitCode",
    "InputError",
    "RunSpec",
    "RunSummary",
    "Store",
    "StoreBusyError",
    "StoreError",
    "__version__",
    "plan",
    "request_key",
    "run",
    "run_spec",
]

if TYPE_CHECKING:
    from costinfer.accounting.summary import RunSummary
    from costinfer.errors import (
        AuthError,
        BackendError,
        BadRowError,
        ConfigError,
        CostinferError,
        ExitCode,
        InputError,
        StoreBusyError,
        StoreError,
    )
    from costinfer.pipeline.build import run_spec
    from costinfer.pipeline.run import plan, run
    from costinfer.reading.keys import request_key
    from costinfer.spec import RunSpec
    from costinfer.store import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'costinfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
