"""costinfer: run large prompt datasets through LLMs for the least money, never past the budget.

The library API: ``run(RunOptions(...))`` does what ``costinfer run`` does; ``Store`` opens the DuckDB store.
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
    "RunOptions": "costinfer.pipeline.options",
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
    "RunOptions",
    "RunSummary",
    "Store",
    "StoreBusyError",
    "StoreError",
    "__version__",
    "request_key",
    "run",
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
    from costinfer.pipeline.options import RunOptions
    from costinfer.pipeline.run import run
    from costinfer.reading.keys import request_key
    from costinfer.store import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'costinfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
