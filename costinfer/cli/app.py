"""The ``costinfer`` command: the Typer app, error handling and exit codes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from costinfer.errors import CostinferError, ExitCode

EXIT_CODES_HELP = (
    "Exit codes: 0 success (every row answered); 1 internal error (a bug: please report it); 2 bad option or "
    "configuration; 3 bad input data; 4 budget stopped the run with rows not run; 5 rows left unanswered (failed, or "
    "not run for another reason; or the server cannot be reached); 6 the store is in use by another process; 7 a file "
    "or the store could not be written (disk full?): answers already saved are kept, rerun to finish; 130 interrupted "
    "(Ctrl-C or SIGTERM; rerun the same command to resume)."
)

app = typer.Typer(
    name="costinfer",
    help="Run large prompt datasets through LLMs for the least money, never past the budget.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# NO_COLOR (no-color.org): no escape codes at all, bold headers included (rich drops only the colours)
_PLAIN: dict[str, Any] = {"color_system": None} if os.environ.get("NO_COLOR") else {}
err_console = Console(stderr=True, highlight=False, soft_wrap=True, **_PLAIN)
out_console = Console(highlight=False, soft_wrap=True, **_PLAIN)


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
        from costinfer.store import as_store_failure

        failure = as_store_failure(exc)  # a full or read-only disk under the store: the user's to fix, exit 7
        if failure is not None and not debug:
            err_console.print(f"error: {failure}", markup=False)
            raise typer.Exit(int(failure.exit_code)) from None
        if debug:
            raise
        err_console.print(
            f"internal error: {exc.__class__.__name__}: {exc} (set COSTINFER_DEBUG=1 to see the traceback)",
            markup=False,
        )
        raise typer.Exit(int(ExitCode.INTERNAL)) from None


def open_for_reading(store: str | None) -> Any:
    """The store for a command that only reads it: while a run holds a DuckDB file, its live copy (said on stderr)."""
    from costinfer.store import Store

    st = Store.open(store, create=False, live_ok=True, live=False)
    if st.note:
        err_console.print(f"note: {st.note}", markup=False)
    return st


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a command as Ctrl-C does (what finished is saved, exit 130), in every phase: while the dataset
    is read as well as while calls are sent (there the executor's own handler makes the stop graceful)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Each command's module registers it on ``app`` when imported.
COMMAND_MODULES = {
    "analyze": "costinfer.cli.analyze",
    "batches": "costinfer.cli.batches",
    "budget": "costinfer.cli.budget",
    "cache": "costinfer.cli.cache",
    "doctor": "costinfer.cli.doctor",
    "plan": "costinfer.cli.plan",
    "prices": "costinfer.cli.prices",
    "report": "costinfer.cli.analyze",
    "runs": "costinfer.cli.analyze",
    "route": "costinfer.cli.route",
    "run": "costinfer.cli.run",
    "simulate": "costinfer.cli.simulate",
    "store": "costinfer.cli.store_copy",
}


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"costinfer {version('costinfer')}")
        except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
            typer.echo("costinfer (not installed)")
        raise typer.Exit(0)


@app.callback()
def _group(
    _version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    # costinfer is always a group of commands, even when only the one being run is loaded (see ``main``)
    pass


def _short_helps(typer_app: typer.Typer) -> None:
    """Each command's first sentence as its line in the command list, whole: click would cut it at the width."""
    for info in typer_app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and text:
            info.short_help = text.strip().split("\n\n")[0].replace("\n", " ")
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        text = group.help if isinstance(group.help, str) else sub.info.help
        if not isinstance(group.short_help, str) and isinstance(text, str):
            group.short_help = text.strip().split("\n\n")[0].replace("\n", " ")
        _short_helps(sub)


def load_commands(only: str | None = None) -> typer.Typer:
    """Import the command modules (every one, or only ``only``'s when it names one) and return the app."""
    import importlib

    for name, module in COMMAND_MODULES.items():
        if only in (None, name) or only not in COMMAND_MODULES:
            importlib.import_module(module)
    _short_helps(app)
    return app


def main() -> None:
    """The console script. Only the invoked command's module is imported (the others cost a fifth of a second of
    start-up), and the process ends without tearing down the interpreter once everything is written and closed."""
    import sys

    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    code = 0
    try:
        load_commands(command)(standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
