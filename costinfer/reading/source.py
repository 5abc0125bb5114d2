"""Where a run's rows come from: a file (plain, .gz or .zst), or standard input spooled to a temporary file.

Standard input is copied to a temporary file as it arrives (streamed, hashed on the way), so the rest of the pipeline
reads a file like any other, and the same data piped again is the same run (its identity is the content's hash,
where a file's is its path, size and modification time).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costinfer.errors import InputError

STDIN = "-"


@dataclass(frozen=True)
class Source:
    path: Path  # the file to read
    label: str  # what messages and the rejects file call it: the path as given, or <stdin>
    identity: dict[str, Any]  # what makes two invocations the same input, for the run's fingerprint

    @property
    def stem(self) -> str:
        """The name results default to: data.jsonl.gz -> data, <stdin> -> stdin."""
        name = self.path.name
        for suffix in (".gz", ".zst", ".zstd"):
            name = name.removesuffix(suffix)
        return Path(name).stem


def is_stdin(path: Path) -> bool:
    return str(path) == STDIN


def check_file(path: Path) -> None:
    """A dataset path must name a readable file: one line naming the problem otherwise."""
    if is_stdin(path):
        return
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a dataset file; name a .jsonl, .csv or .parquet file in it")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot be read (permission denied)")


_COMPRESSED = ((b"\x1f\x8b", ".gz"), (b"\x28\xb5\x2f\xfd", ".zst"))  # gzip's and zstd's magic numbers


@contextmanager
def open_source(path: Path, fmt: str) -> Iterator[Source]:
    """The input as a ``Source``; for ``-`` (standard input) a temporary copy that is removed afterwards."""
    if not is_stdin(path):
        check_file(path)
        st = path.stat()
        identity = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        yield Source(path, str(path), identity)
        return
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("-: standard input is a terminal; pipe the rows in (costinfer run - < data.jsonl)")
    folder = Path(tempfile.mkdtemp(prefix="costinfer-stdin-"))
    try:
        spooled = folder / f"stdin.{fmt}"
        digest = hashlib.sha256()
        with spooled.open("wb") as out:
            source = sys.stdin.buffer
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if spooled.stat().st_size == 0:
            raise InputError("<stdin>: no rows arrived on standard input")
        with spooled.open("rb") as fh:
            magic = fh.read(4)
        for head, suffix in _COMPRESSED:  # a compressed stream (zcat forgotten): read it as the file it is
            if magic.startswith(head):
                spooled = spooled.rename(spooled.with_name(f"{spooled.name}{suffix}"))
        yield Source(spooled, "<stdin>", {"stdin_sha256": digest.hexdigest()})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
