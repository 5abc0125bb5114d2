"""``costinfer doctor``: check a server before a run."""

from __future__ import annotations

from typing import Optional

import orjson
import typer

from costinfer.backends.base import BackendConfig, backend_class
from costinfer.backends.doctor import diagnose
from costinfer.backends.urls import check_url
from costinfer.cli.app import app, handled, out_console
from costinfer.errors import ConfigError, ExitCode


@app.command("doctor")
def doctor_command(
    base_url: str = typer.Option(..., help="The server's base URL, e.g. http://127.0.0.1:8000/v1."),
    provider: str = typer.Option("vllm", help="vllm (every check), or openai and other compatible servers."),
    model: Optional[str] = typer.Option(None, help="The model the run will ask for (default: the first served)."),
    timeout_s: float = typer.Option(30.0, "--timeout", help="Seconds to wait for each answer."),
    json_out: bool = typer.Option(False, "--json", help="The checks as one JSON array."),
) -> None:
    """Check a server in one command: reachable, the model served, its context length, tokenizer (/tokenize) and
    metrics (/metrics), and one one-token call (on your own server only).

    Exits 0 when every check passes, 5 when the server cannot be reached, 2 when a check fails.

    \b
    Example:
      costinfer doctor --base-url http://127.0.0.1:8000/v1 --model meta-llama/Llama-3.1-8B-Instruct
    """
    with handled():
        check_url(base_url)
        cls = backend_class(provider)
        if cls.key_required and not cls(BackendConfig(base_url=base_url)).api_key():
            raise ConfigError(f"provider '{provider}' needs an API key")
        checks = diagnose(cls(BackendConfig(base_url=base_url, timeout_s=timeout_s, concurrency=4)), model)
        if json_out:
            typer.echo(orjson.dumps([c.__dict__ for c in checks]).decode())
        else:
            for c in checks:
                mark = {True: "ok  ", False: "FAIL", None: "--  "}[c.ok]
                out_console.print(f"{mark} {c.name}: {c.detail}", markup=False, soft_wrap=True)
        if checks[0].name == "reachable" and not checks[0].ok:
            raise typer.Exit(int(ExitCode.ROWS_FAILED))
        if any(c.ok is False for c in checks):
            raise typer.Exit(int(ExitCode.USAGE))
