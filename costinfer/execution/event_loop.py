"""Running an executor on an event loop: uvloop where installed, and SIGINT/SIGTERM turned into a graceful stop
(calls in flight finish and are saved; a second signal stops waiting for them)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import anyio

from costinfer.execution.batch_mode import BatchExecutor
from costinfer.execution.online import Executor

FILES_RESERVED = 64  # descriptors kept for the store, the dataset, the results, the event loop and the libraries


def open_files_allow(calls: int, per_call: int = 1) -> tuple[int, str | None]:
    """Calls in flight this process can hold connections for: the soft limit on open files is raised to the hard
    one first (macOS starts at 256), and ``calls`` is capped below what is left, with a note saying so.
    ``per_call``: descriptors each call holds here (2 when the server runs in this process: the simulator)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return calls, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    room = max(1, (soft - FILES_RESERVED) // per_call)
    if calls <= room:
        return calls, None
    return room, (
        f"--concurrency {calls} needs more open files than this process may hold ({soft}, `ulimit -n`): "
        f"{room} calls in flight instead"
    )


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
