"""Stream JSONL, CSV and Parquet datasets as raw rows, chunk by chunk, with the line each came from.

Nothing here holds more than one chunk in memory, so a file larger than memory reads fine. A row that cannot be
parsed at all (malformed JSON, bytes that are not UTF-8) comes out as a ``RawRow`` with ``error`` set; turning good
raw rows into requests is ``rows.py``'s job.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from costinfer.errors import ConfigError, InputError

FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Compressed text inputs, streamed: gzip from the standard library, Zstandard through the zstandard package
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
CHUNK_ROWS = 4096
# A CSV cell may hold as long a prompt as a JSONL line may (the csv module's default limit is 131,072 characters)
csv.field_size_limit(2**31 - 1)


@dataclass(slots=True)
class RawRow:
    """One row as read. ``line`` is 1-based; ``error`` is ``(field, reason)`` when the row could not be parsed."""

    line: int
    data: dict[str, Any] | None
    error: tuple[str, str] | None = None


def compression_of(path: Path) -> str | None:
    """'gzip' or 'zstd' for a compressed file (by its last extension), None for a plain one."""
    return COMPRESSIONS.get(path.suffix.lower())


def detect_format(path: Path, override: str | None = None) -> str:
    compression = compression_of(path)
    inner = path.with_suffix("") if compression else path
    if override:
        if override not in FORMATS:  # a bad option, not bad data: exit 2
            known = ", ".join([*FORMATS, "openai-batch", "anthropic-batch"])
            raise ConfigError(f"--format must be one of {known}, got '{override}'")
        fmt = override
    else:
        found = _EXTENSIONS.get(inner.suffix.lower())
        if found is None:
            raise InputError(
                f"{path}: cannot tell the format from the extension '{inner.suffix or '(none)'}'; "
                f"use .jsonl, .csv or .parquet (.jsonl.gz, .jsonl.zst), or pass --format {'|'.join(FORMATS)}"
            )
        fmt = found
    if compression and fmt == "parquet":
        raise InputError(f"{path}: a Parquet file compresses its own columns; give it uncompressed")
    return fmt


def open_input(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed as they are read when its extension says it is compressed."""
    compression = compression_of(path)
    if compression == "gzip":
        import gzip

        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:  # pragma: no cover - a dependency of costinfer
            raise InputError(
                f"{path}: reading .zst files needs the zstandard package (pip install zstandard)"
            ) from None
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
        return io.BufferedReader(raw)  # line iteration, which the raw reader lacks
    return path.open("rb")


def _bad_compressed(path: Path, exc: Exception) -> InputError:
    return InputError(f"{path}: cannot decompress the file: {exc}")


def row_kind(fmt: str) -> str:
    """What a position in this format is called in messages: a Parquet file has rows, text files have lines."""
    return "row" if fmt == "parquet" else "line"


def read_chunks(path: Path, fmt: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[list[RawRow]]:
    """Yield lists of at most ``chunk_rows`` raw rows. Raises ``InputError`` for a file that cannot be read at all."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a dataset file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty: no rows to run")
    readers = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}
    chunk: list[RawRow] = []
    seen_any = False
    for row in readers[fmt](path):
        seen_any = True
        chunk.append(row)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
    if not seen_any:
        raise InputError(f"{path}: the file holds no rows")


def _jsonl_rows(path: Path) -> Iterator[RawRow]:
    with open_input(path) as fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                if lineno == 1 and raw.startswith(_BOM):  # as the blocks read it: not data
                    raw = raw[len(_BOM) :]
                row = jsonl_row(lineno, raw[:-1] if raw.endswith(b"\n") else raw)
                if row is not None:
                    yield row
        except (OSError, EOFError, ValueError) as exc:  # a damaged or cut gzip/zstd stream
            raise _bad_compressed(path, exc) from exc


_BOM = b"\xef\xbb\xbf"  # UTF-8's byte-order mark


def jsonl_blocks(path: Path, block_bytes: int = 4 << 20) -> Iterator[tuple[int, bytes]]:
    """(first line number, bytes) of consecutive whole-line blocks of a JSONL file, parsed a block at a time."""
    for line, _, block in _jsonl_blocks(path, block_bytes):
        yield line, block


def jsonl_spans(path: Path, block_bytes: int = 4 << 20) -> Iterator[tuple[int, int, int]]:
    """(first line number, offset, length) of the blocks ``jsonl_blocks`` yields, for an uncompressed file: a reader
    that can open the file reads its block itself (``read_span``) and the bytes are not sent it."""
    assert compression_of(path) is None, "a compressed file's offsets are not its blocks'"
    for line, offset, block in _jsonl_blocks(path, block_bytes):
        yield line, offset, len(block)


def read_span(path: str, offset: int, length: int) -> bytes:
    """A block of ``jsonl_spans``, read from the file. Raises ``InputError`` when the file changed under the read."""
    with open(path, "rb") as fh:
        block = os.pread(fh.fileno(), length, offset)
    if len(block) != length or (length and not block.endswith(b"\n") and os.path.getsize(path) != offset + length):
        raise InputError(f"{path}: the file changed while it was read")
    return block


def _jsonl_blocks(path: Path, block_bytes: int) -> Iterator[tuple[int, int, bytes]]:
    line, offset = 1, 0  # offset: of the block in the file (uncompressed files)
    carry = b""
    with open_input(path) as fh:
        while True:
            try:
                data = fh.read(block_bytes)
            except (OSError, EOFError, ValueError) as exc:  # a damaged or cut gzip/zstd stream
                raise _bad_compressed(path, exc) from exc
            if not data:
                break
            if line == 1 and not carry and offset == 0 and data.startswith(_BOM):  # Excel and PowerShell write one
                data = data[len(_BOM) :]
                offset = len(_BOM)
            data = carry + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data  # one line longer than a block: keep reading
                continue
            block, carry = data[:cut], data[cut:]
            yield line, offset, block
            line += block.count(b"\n")
            offset += len(block)
    if carry:
        yield line, offset, carry


def jsonl_block_rows(first_line: int, block: bytes) -> list[RawRow]:
    """The rows of a block from ``jsonl_blocks``, as ``_jsonl_rows`` reads them."""
    rows = []
    if block.endswith(b"\n"):
        block = block[:-1]
    for offset, raw in enumerate(block.split(b"\n")):
        row = jsonl_row(first_line + offset, raw)
        if row is not None:
            rows.append(row)
    return rows


def jsonl_row(lineno: int, raw: bytes) -> RawRow | None:
    """One JSONL line as a row; None for a blank line (a trailing newline, a spacer: not rows)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            return None
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            reason = f"not valid UTF-8: byte 0x{raw[bad.start]:02x} at column {bad.start + 1}"
            return RawRow(lineno, None, ("(line)", reason))
        return RawRow(lineno, None, ("(line)", f"malformed JSON: {exc.msg} at column {exc.colno}"))
    if type(value) is not dict:
        return RawRow(lineno, None, ("(line)", f"expected a JSON object, got {_json_kind(value)}"))
    return RawRow(lineno, value)


def _json_kind(value: object) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null"
    )


class _BadBytes(Exception):
    def __init__(self, lineno: int, reason: str) -> None:
        self.lineno = lineno
        self.reason = reason


def _decoded_lines(fh: IO[bytes], counter: list[int]) -> Iterator[str]:
    for raw in fh:
        counter[0] += 1
        try:
            yield raw.decode("utf-8-sig" if counter[0] == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _BadBytes(
                counter[0], f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
            ) from None


def _csv_rows(path: Path) -> Iterator[RawRow]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    counter = [0]
    with open_input(path) as fh:
        lines = _decoded_lines(fh, counter)
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except _BadBytes as exc:
            raise InputError(f"{path}:line {exc.lineno}: the header is {exc.reason}") from None
        header = [name.strip() for name in header]
        width = len(header)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except _BadBytes as exc:
                yield RawRow(exc.lineno, None, ("(line)", exc.reason))
                continue
            except csv.Error as exc:
                yield RawRow(counter[0], None, ("(line)", f"malformed CSV: {exc}"))
                continue
            lineno = counter[0]
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if len(cells) > width:
                yield RawRow(lineno, None, ("(line)", f"{len(cells)} cells but the header names {width} columns"))
                continue
            yield RawRow(lineno, {name: (cells[i] if i < len(cells) else None) for i, name in enumerate(header)})


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from exc
    position = 0
    try:
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
            for record in batch.to_pylist():
                position += 1
                yield RawRow(position, record)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}:row {position + 1}: cannot read the Parquet data: {exc}") from exc
