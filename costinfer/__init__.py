"""costinfer: run large prompt datasets through LLMs for the least money, never past the budget.

The library API: ``run(RunOptions(...))`` does what ``costinfer run`` does; ``Store`` opens the DuckDB store.
Names are imported on first use, so that a module of the package (a worker process's) loads without the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AuthError": "costinfer.core.errors",
    "BackendError": "costinfer.core.errors",
    "BadRowError": "costinfer.core.errors",
    "ConfigError": "costinfer.core.errors",
    "CostinferError": "costinfer.core.errors",
    "ExitCode": "costinfer.core.errors",
    "InputError": "costinfer.core.errors",
    "StoreBusyError": "costinfer.core.errors",
    "StoreError": "costinfer.core.errors",
    "request_key": "costinfer.core.keys",
    "RunOptions": "costinfer.core.options",
    "RunSummary": "costinfer.core.summary",
    "run": "costinfer.core.runner",
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
    from costinfer.core.errors import (
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
    from costinfer.core.keys import request_key
    from costinfer.core.options import RunOptions
    from costinfer.core.runner import run
    from costinfer.core.summary import RunSummary
    from costinfer.store import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'costinfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
