"""``costinfer simulate serve``: run the OpenAI-compatible simulator for other tools and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from costinfer.cli.app import app, err_console, handled
from costinfer.simulator import SimulatorConfig, serve_forever

simulate_app = typer.Typer(help="The built-in OpenAI-compatible simulator.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")


@simulate_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8099, help="Port to listen on; 0 picks a free one."),
    latency_ms: float = typer.Option(0.0, help="Mean answer latency in milliseconds."),
    jitter_ms: float = typer.Option(0.0, help="Uniform jitter around the latency, in milliseconds."),
    log: Optional[Path] = typer.Option(None, help="Append one JSON line per answered request to this file."),
) -> None:
    """Serve chat completions with deterministic answers and realistic usage until SIGINT or SIGTERM."""
    with handled():
        cfg = SimulatorConfig(latency_ms=latency_ms, jitter_ms=jitter_ms, log_path=log)

        def ready(url: str) -> None:
            err_console.print(f"simulator listening on {url}", markup=False)
            print(url, flush=True)

        serve_forever(host, port, cfg, on_ready=ready)
