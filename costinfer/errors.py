"""One exception tree for costinfer, and the exit code each kind of failure maps to.

The CLI shows ``str(error)`` as one line and exits with ``error.exit_code``; set ``COSTINFER_DEBUG=1`` to see the
traceback instead. Errors from lower libraries (DuckDB, pyarrow, aiohttp) are converted where they enter, with
``raise ... from exc``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (README, ``costinfer --help``)."""

    OK = 0
    INTERNAL = 1  # a bug in costinfer: please report it
    USAGE = 2  # a bad option or configuration (also click's own code for usage errors)
    BAD_INPUT = 3  # the dataset has bad rows (with --on-bad-row fail) or cannot be read
    BUDGET = 4  # the budget stopped the run: some rows were not run
    ROWS_FAILED = 5  # the run ended with rows unanswered: a call failed for them, or they were not run (not the budget)
    STORE_BUSY = 6  # another costinfer process holds the store
    WRITE_FAILED = 7  # a file or the store could not be written (disk full?): what was saved is kept; rerun
    INTERRUPTED = 130  # Ctrl-C or SIGTERM: what finished is saved; rerun to resume


class CostinferError(Exception):
    """Base of every error costinfer raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigError(CostinferError):
    """A bad option, a missing API key, an unknown model or provider."""

    exit_code = ExitCode.USAGE


class InputError(CostinferError):
    """The dataset cannot be read, or holds bad rows."""

    exit_code = ExitCode.BAD_INPUT


class BadRowError(InputError):
    """One bad row: names the file, the line (or Parquet row) and the field."""

    def __init__(self, path: str, line: int, field: str, reason: str, *, row_kind: str = "line") -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason
        self.row_kind = row_kind
        super().__init__(f"{path}:{row_kind} {line}: field '{field}': {reason}")


class BudgetError(CostinferError):
    """The plan's expected cost does not fit the budget, and the user asked not to run part of it."""

    exit_code = ExitCode.BUDGET


class StoreError(CostinferError):
    """The store cannot be opened or is not a costinfer store."""

    exit_code = ExitCode.USAGE


class StoreBusyError(StoreError):
    """Another process holds the store's write lock."""

    exit_code = ExitCode.STORE_BUSY


class WriteError(CostinferError):
    """The results, the rejects or the store could not be written (a full disk, a lost mount). Answers committed to
    the store before are kept: the message says how to get the results without paying again."""

    exit_code = ExitCode.WRITE_FAILED


class UnreachableError(CostinferError):
    """The server cannot be reached at all (connection refused, no such host): the run stopped early."""

    exit_code = ExitCode.ROWS_FAILED


class BackendError(CostinferError):
    """A call to a model server failed.

    ``retryable`` says whether the same call may succeed later (429, 5xx, timeouts, dropped connections, malformed
    bodies); ``fatal`` says the whole run should stop (authentication failures).
    """

    def __init__(
        self,
        message: str,
        *,
        error_class: str = "backend_error",
        status: int | None = None,
        retryable: bool = False,
        fatal: bool = False,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.error_class = error_class
        self.status = status
        self.retryable = retryable
        self.fatal = fatal
        self.retry_after = retry_after


class AuthError(BackendError, ConfigError):
    """The server refused the credentials: every further call would fail the same way."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, status: int | None = None) -> None:
        BackendError.__init__(self, message, error_class="auth_error", status=status, fatal=True)
