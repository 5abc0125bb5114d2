"""costinfer: run large prompt datasets through LLMs for the least money, never past the budget.

The library API: ``run(RunOptions(...))`` does what ``costinfer run`` does; ``Store`` opens the DuckDB store.
"""

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
from costinfer.core.runner import RunOptions, RunSummary, run
from costinfer.core.store import Store

__version__ = "0.1.0"

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
