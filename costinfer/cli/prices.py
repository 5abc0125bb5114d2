"""``costinfer prices list|show|update``: the price catalog in force, and how to refresh it."""

from __future__ import annotations

import json
import os
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from costinfer.cli.app import app, handled, out_console
from costinfer.core.config import Config
from costinfer.core.errors import ConfigError
from costinfer.core.prices import Catalog, parse_catalog, updated_catalog_path

LITELLM_URL = "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"
MILLION = Decimal(1_000_000)

prices_app = typer.Typer(help="The price catalog (LiteLLM's model_prices_and_context_window.json format).")
app.add_typer(prices_app, name="prices")

ConfigOpt = typer.Option(
    None, "--config", help="costinfer.toml with overrides. Default: $COSTINFER_CONFIG or ./costinfer.toml"
)
PricesOpt = typer.Option(None, "--prices", help="A catalog file instead of the one in force.")


def _per_million(entry: dict[str, Any], name: str) -> str:
    value = entry.get(name)
    if value is None:
        return "-"
    return f"{Decimal(str(value)) * MILLION:.4f}".rstrip("0").rstrip(".")


@prices_app.command("list")
def list_prices(
    provider: Optional[str] = typer.Option(None, help="Only this provider's models (openai, anthropic, ...)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object: model name to its catalog entry."),
    config: Optional[Path] = ConfigOpt,
    prices: Optional[Path] = PricesOpt,
) -> None:
    """List the models the catalog prices, in dollars per million tokens."""
    with handled():
        catalog = Catalog.load(prices, Config.load(config))
        rows = [(m, catalog.entry(m) or {}) for m in catalog.models()]
        rows = [(m, e) for m, e in rows if provider is None or e.get("litellm_provider") == provider]
        if json_out:
            typer.echo(json.dumps(dict(rows), default=float))
            return
        table = Table(title=f"prices ({catalog.source}); $ per 1M tokens")
        for col in ("model", "provider", "input", "output", "cached input", "batch in", "batch out", "context"):
            table.add_column(col, justify="left" if col in ("model", "provider") else "right", no_wrap=True)
        for model, e in rows:
            table.add_row(
                model,
                str(e.get("litellm_provider", "")),
                _per_million(e, "input_cost_per_token"),
                _per_million(e, "output_cost_per_token"),
                _per_million(e, "cache_read_input_token_cost"),
                _per_million(e, "input_cost_per_token_batches"),
                _per_million(e, "output_cost_per_token_batches"),
                str(e.get("max_input_tokens", "-")),
            )
        out_console.print(table)


@prices_app.command("show")
def show_price(
    model: str = typer.Argument(..., help="A model name as the catalog spells it."),
    config: Optional[Path] = ConfigOpt,
    prices: Optional[Path] = PricesOpt,
) -> None:
    """Show one model's catalog entry, with its prices per million tokens."""
    with handled():
        catalog = Catalog.load(prices, Config.load(config))
        entry = catalog.entry(model)
        if entry is None:
            catalog.lookup(model, "openai")  # raises the error that names the fix
            return
        per_m = {k: _per_million(entry, k) for k in entry if k.endswith("_cost_per_token") or k.endswith("token_cost")}
        typer.echo(
            json.dumps(
                {"model": model, "source": catalog.source, "entry": entry, "usd_per_million_tokens": per_m},
                indent=2,
                default=float,
            )
        )


@prices_app.command("update")
def update_prices(
    source: str = typer.Option(LITELLM_URL, "--from", help="A URL or a file in LiteLLM's format."),
) -> None:
    """Replace the catalog in force with a newer one (saved beside the default store)."""
    with handled():
        if source.startswith(("http://", "https://")):
            import httpx

            try:
                resp = httpx.get(source, timeout=30, follow_redirects=True)
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                raise ConfigError(f"cannot fetch {source}: {exc}; download it elsewhere and pass --from FILE") from exc
            text = resp.text
        else:
            try:
                text = Path(source).read_text("utf-8")
            except OSError as exc:
                raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
        entries = parse_catalog(text, source)
        target = updated_catalog_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text, "utf-8")
        os.replace(tmp, target)
        target.with_name(target.stem + ".source.json").write_text(
            json.dumps({"source": source, "snapshot_date": date.today().isoformat()}), "utf-8"
        )
        typer.echo(f"{len(entries)} priced models from {source} saved to {target}")
