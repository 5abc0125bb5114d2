"""Running an executor on an event loop: uvloop where installed, and SIGINT/SIGTERM turned into a graceful stop
(calls in flight finish and are saved; a second signal stops waiting for them)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import anyio

from costinfer.core.batch import BatchExecutor
from costinfer.core.executor import Executor


def call_all(executor: Executor | BatchExecutor, pages: Iterator[Any]) -> None:
    """Send every pending request of ``pages`` through ``executor``, on a fresh event loop."""
    anyio.run(_execute, executor, pages, backend_options=_loop_options())


def _loop_options() -> dict[str, Any]:
    """uvloop when it is installed: it cuts the event loop's share of each call (benchmarks/throughput.py)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _execute(executor: Executor | BatchExecutor, pages: Iterator[Any]) -> None:
    async with executor.backend, anyio.create_task_group() as tg:
        if _can_handle_signals():
            tg.start_soon(_watch_signals, executor, tg.cancel_scope)
        await executor.run(pages)
        tg.cancel_scope.cancel()


def _can_handle_signals() -> bool:
    return threading.current_thread() is threading.main_thread()


async def _watch_signals(executor: Executor | BatchExecutor, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if executor.stopping:
                scope.cancel()  # a second signal: stop waiting for calls in flight
                return
            executor.request_stop("interrupted")
