"""Writing a run's files (results, rejects) so that a failure never loses a paid answer or leaves a stale file."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from costinfer.errors import (
    WriteError,
)


def remove_stale(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_file():
            path.unlink()


def write_or_explain(path: Path, write: Callable[[], object], paid: bool, store: Path | None = None) -> None:
    """Write an output file; a failure (a full disk) is one line that says what is kept and how to get the file.
    ``store``: the store's path, where the paid answers are kept."""
    try:
        write()
    except OSError as exc:  # the store's writes raise OSError for DuckDB's I/O failures too
        reason = io_reason(exc)
        saved = (
            f"; every answer is saved in the store {store}: free space and rerun the same command to write the "
            f"results without paying again"
            if paid and store is not None
            else "; nothing was sent"
        )
        raise WriteError(f"cannot write {path}: {reason}{saved}") from exc


def write_or_explain_report(write: Callable[[], tuple[Path, Path]], results: Path) -> tuple[Path, Path]:
    """Write the run's report; a failure says that the answers and results are kept and how to rebuild it."""
    try:
        return write()
    except OSError as exc:
        raise WriteError(
            f"cannot write the report beside {results}: {io_reason(exc)}; the answers and the results file are "
            f"kept: free space and run `costinfer report RUN_ID` to rebuild it"
        ) from exc


def io_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    for known in ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied"):
        if known.lower() in text.lower():
            return known
    return text.splitlines()[0] if text else exc.__class__.__name__


def write_jsonl_atomically(path: Path, rows: list[dict[str, object]]) -> None:
    """JSON lines into a temporary file beside ``path``, then renamed over it: a reader never sees half a file."""
    import os

    import orjson

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(b"".join(orjson.dumps(r, default=str) + b"\n" for r in rows))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
