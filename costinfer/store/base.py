"""What every part of the store shares: the connection (private to this package), the values it hands out, and the
small SQL helpers. The rules that several queries share are written here once."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from costinfer.errors import CostinferError, StoreError, WriteError

ENV_STORE = "COSTINFER_STORE"
ENV_MEMORY = "COSTINFER_DUCKDB_MEMORY"
# DuckDB's memory bound (past it, it spills to disk). 1 GB, and 512 MB while a dataset is read, when ingestion's worker
# processes share the machine (1 GB then gave a plan of 1,000,000 rows no speed and 400 MB more). Once reading is
# over, the normalized tier's join over a million requests took 1.1-1.2 s at 512 MB, 0.95-1.03 s at 768 MB, 0.59-0.64 s
# at 1 GB (2026-12-07)
DEFAULT_MEMORY = "1GB"
READING_MEMORY = "512MB"
READING_COMPRESSION = "zstd"  # see reading_mode
MONEY = pa.decimal128(38, 12)
_QUANTUM = Decimal("1e-12")
# Every DuckDB database file has these bytes at offset 8 (its header's magic number)
_DUCKDB_MAGIC = b"DUCK"

# A distinct request of a run (``rk``, a row of run_keys) that nothing answers yet: no reuse tier lends it an answer
# and the cache holds none. What is left to send, to plan and to embed is this, everywhere.
# A routed request (tier 'routed' or 'escalated') is sent as another model's request: ``SENT`` is the key its answer is
# sent and cached under. ``PlanningPart.pending_groups`` writes this out for each kind of tier (faster): change both.
ROUTED_TIERS = "('routed', 'escalated')"
SENT = f"CASE WHEN rk.tier IN {ROUTED_TIERS} THEN rk.answer_key ELSE rk.key END"
UNANSWERED = (
    f"(rk.answer_key IS NULL OR rk.tier IN {ROUTED_TIERS}) "
    f"AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.key = {SENT})"
)
# A request that borrows another's answer (a reuse tier): ``answer_key`` is its lender, a request of this run that is
# itself sent (the tiers never leave one borrower lending to another: ``ReusePart.flatten_reuse``) or one an earlier
# run answered. Every other tier names in ``answer_key`` the request really sent for it (routed, escalated, fallback).
BORROW_TIERS = "('normalized', 'semantic')"
# Where a run key's answer lives (the key of its response, or of its last failed call), through any reuse: a
# borrower's is its lender's, followed once more when the lender is a request of this run that was routed, escalated
# or answered by the fallback model since. Needs ``LENDER`` joined as ``ln``.
# Joined as a small set, the requests some borrower names, not all of run_keys: at a million rows the whole table's
# hash table did not fit in DuckDB's 512 MB beside the query's others
LENDER = (
    f"LEFT JOIN (SELECT run_id, key, tier, answer_key FROM run_keys WHERE key IN "
    f"(SELECT answer_key FROM run_keys WHERE tier IN {BORROW_TIERS})) ln "
    f"ON ln.run_id = rk.run_id AND ln.key = rk.answer_key AND rk.tier IN {BORROW_TIERS}"
)
ANSWER_AT = (
    f"CASE WHEN rk.tier IN {BORROW_TIERS} THEN "
    f"CASE WHEN ln.key IS NULL OR ln.tier IS NULL THEN rk.answer_key ELSE ln.answer_key END "
    f"ELSE coalesce(rk.answer_key, rk.key) END"
)


def default_store_path() -> Path | str:
    """``$COSTINFER_STORE`` (a file, or a ``postgresql://`` URL), else ``$XDG_DATA_HOME/costinfer/store.duckdb``
    (``~/.local/share`` without XDG)."""
    env = os.environ.get(ENV_STORE)
    if env:
        if env.lower().startswith(("postgresql://", "postgres://")):
            return env
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "costinfer" / "store.duckdb"


def store_location(value: str | Path | None) -> Path | str | None:
    """``--store`` as given: a ``postgresql://`` URL stays text (a Path would fold its ``//``), anything else a path."""
    if value is None:
        return None
    if str(value).lower().startswith(("postgresql://", "postgres://")):
        return str(value)
    return Path(value).expanduser()


def check_store_path(path: Path, *, create: bool = True) -> None:
    """A store path must be a DuckDB database file, or a new path (only where ``create`` allows making one)."""
    if path.is_dir():
        raise StoreError(f"--store {path}: is a folder; name a file such as {path / 'store.duckdb'}")
    if not path.exists():
        if not create:
            raise StoreError(f"--store {path}: no store there (nothing has run with it); check the path")
        return
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        raise StoreError(f"--store {path}: cannot be read: {exc.strerror}") from exc
    if head[8:12] != _DUCKDB_MAGIC:
        raise StoreError(
            f"--store {path}: is not a DuckDB database (it holds other data); costinfer will not use or overwrite "
            f"it. Pass a new path or an existing costinfer store; nothing was read or sent"
        )


def money(value: Decimal) -> Decimal:
    return value.quantize(_QUANTUM)


@dataclass(slots=True)
class Outcome:
    """The final result of one distinct request in a run: an answer, or an error after the retries."""

    key: str
    provider: str
    model: str
    attempts: int
    response: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # input tokens written to the provider's prompt cache
    reasoning_tokens: int = 0  # part of output_tokens
    cost_usd: Decimal = Decimal(0)
    latency_ms: float | None = None
    http_status: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    mode: str = "online"  # "batch": answered through a provider batch API, billed at batch prices
    replaces: str | None = None  # a fallback answer: the key of the request it stands in for
    request_body: dict[str, Any] | None = None  # ... and the fallback request that was sent
    cached: bool = False  # no call: the (fallback) request's answer was already in the cache, and is only lent
    held_usd: Decimal = Decimal(0)  # what a budget pool holds for this call until the outcome is durable

    @property
    def ok(self) -> bool:
        return self.error_class is None


@dataclass(slots=True)
class Pending:
    key: str
    body: dict[str, Any]
    input_bound: int  # the most input tokens this request can be billed for
    max_tokens: int
    model: str
    input_tokens: int = 0  # the counted input tokens: what a provider's tokens-per-minute limit counts
    shared_prefix: bool = False  # other pending requests share everything but its last message (a prompt-cache hit)


class Part:
    """A part of the store: its methods use the one connection, which no module outside this package sees."""

    path: Path
    _con: duckdb.DuckDBPyConnection


def one_dict(rel: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    rows = rel.fetchmany(2)  # fetched to the end: a result left open refuses the next register() on the connection
    if not rows:
        return None
    row = rows[0]
    return dict(zip([d[0] for d in rel.description], row, strict=True))


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def copy_atomically(con: duckdb.DuckDBPyConnection, query: str, path: Path, options: str) -> None:
    """``COPY (query) TO path``: into a temporary file beside it, then renamed over it, so a reader never sees half a
    file and a failed write (a full disk) leaves the old file whole and no temporary one behind. Raises ``OSError``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        con.execute(f"COPY ({query}) TO {sql_str(str(tmp))} ({options})")
        os.replace(tmp, path)
    except duckdb.Error as exc:
        raise OSError(f"{exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def reading_mode(con: duckdb.DuckDBPyConnection, reading: bool) -> None:
    """How DuckDB writes while a dataset is read, and after.

    Memory: ``READING_MEMORY`` while reading, ``DEFAULT_MEMORY`` otherwise; a bound the user set
    (``COSTINFER_DUCKDB_MEMORY``) holds throughout.

    Compression: zstd for the strings ingestion writes (keys, bodies, ids), DuckDB's own choice otherwise. Left to
    choose, DuckDB tries each of its string compressions on every column it writes and keeps the best (mostly
    dictionary with FSST). Storing the 1,000,000 rows of ``benchmarks/plan_scale.py`` alone (the tables the ingest
    workers made, in one process) took 7.2-7.9 CPU-s that way, 5.6-5.8 with zstd, for a file 5% larger (211 MB
    against 201 MB); the normalized tier's join over those requests took 0.38 s against 0.31 s (2026-12-07).
    Uncompressed, the file is three times as large.
    """
    if not os.environ.get(ENV_MEMORY):
        con.execute(f"SET memory_limit = {sql_str(READING_MEMORY if reading else DEFAULT_MEMORY)}")
    con.execute(f"SET force_compression = {sql_str(READING_COMPRESSION if reading else 'auto')}")
    if not reading:
        con.execute("RESET threads")  # all the machine's cores again (``IngestPart.share_cores`` took some)


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Any:
    """An Arrow table visible to SQL as ``name`` for the length of a block."""
    # register() refuses a connection whose last result was not fetched to its end (a fetchone() of one row leaves
    # it open): a statement of its own closes that result first
    con.execute("SELECT 1").fetchall()
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Any:
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


_NO_ROOM = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Could not write file")


def as_store_failure(exc: BaseException) -> CostinferError | None:
    """A DuckDB error that escaped the store's own handling, as the user's error when it is one: the disk under the
    store is full or read-only (exit 7, what was committed is kept). None for anything else (a bug)."""
    if not isinstance(exc, duckdb.Error):
        return None
    text = str(exc)
    if isinstance(exc, duckdb.IOException) or any(marker in text for marker in _NO_ROOM):
        reason = next((m for m in _NO_ROOM[:3] if m in text), "the file could not be written")
        return WriteError(
            f"cannot write to the store: {reason} ({text.splitlines()[0][:200]}); what was saved before is kept. "
            f"Free space (or pass another --store) and rerun the same command: answers already saved are not paid again"
        )
    return None
