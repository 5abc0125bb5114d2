"""The ``costinfer`` command: the Typer app, error handling and exit codes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from costinfer.core.errors import CostinferError, ExitCode

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 internal error (a bug: please report it); 2 bad option or configuration; "
    "3 bad input data; 4 budget stopped the run with rows not run; 5 some rows failed; 6 the store is in use by "
    "another process; 130 interrupted (Ctrl-C or SIGTERM; rerun the same command to resume)."
)

app = typer.Typer(
    name="costinfer",
    help="Run large prompt datasets through LLMs for the least money, never past the budget.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


@contextmanager
def handled() -> Iterator[None]:
    """Turn costinfer's errors into one line on stderr and the documented exit code; no traceback for user errors."""
    debug = bool(os.environ.get("COSTINFER_DEBUG"))
    try:
        yield
    except typer.Exit:
        raise
    except CostinferError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        err_console.print("interrupted: rerun the same command to resume", markup=False)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except Exception as exc:
        if debug:
            raise
        err_console.print(
            f"internal error: {exc.__class__.__name__}: {exc} (set COSTINFER_DEBUG=1 to see the traceback)",
            markup=False,
        )
        raise typer.Exit(int(ExitCode.INTERNAL)) from None


def load_commands() -> typer.Typer:
    """Import every command module (each registers itself on ``app``) and return the app."""
    from costinfer.cli import cache as _cache  # noqa: F401
    from costinfer.cli import plan as _plan  # noqa: F401
    from costinfer.cli import prices as _prices  # noqa: F401
    from costinfer.cli import run as _run  # noqa: F401
    from costinfer.cli import simulate as _simulate  # noqa: F401

    return app


def main() -> None:
    load_commands()()


if __name__ == "__main__":  # pragma: no cover
    main()
