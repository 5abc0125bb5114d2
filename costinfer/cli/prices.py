"""``costinfer prices list|show|update``: the price catalog in force, and how to refresh it."""

from __future__ import annotations

import json
import os
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Table

from costinfer.cli.app import app, handled, out_console
from costinfer.errors import ConfigError
from costinfer.pricing.catalog import Catalog, parse_catalog, updated_catalog_path
from costinfer.pricing.config_file import Config

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
        out_console.print(prices_table(rows, catalog.source, out_console.width))


# (header, catalog field or None for the provider, shown when narrow)
_COLUMNS = (
    ("model", "", True),
    ("provider", "litellm_provider", False),
    ("input", "input_cost_per_token", True),
    ("output", "output_cost_per_token", True),
    ("cached in", "cache_read_input_token_cost", True),
    ("batch in", "input_cost_per_token_batches", False),
    ("batch out", "output_cost_per_token_batches", False),
    ("context", "max_input_tokens", True),
)
# Below this width (the catalog's provider names are long) the table drops the provider and batch columns
# (``prices show`` and ``--json`` keep everything)
WIDE = 150


def prices_table(rows: list[tuple[str, dict[str, Any]]], source: str, width: int) -> Table:
    """Prices per million tokens; every number stays readable at 80 columns (fewer columns, never cut cells)."""
    narrow = width < WIDE
    columns = [c for c in _COLUMNS if c[2] or not narrow]
    title = f"$ per 1M tokens, {source}" if narrow else f"prices ({source}); $ per 1M tokens"
    table = Table(title=title, box=None if narrow else box.SIMPLE_HEAD, pad_edge=False)
    body = [[_cell(model, e, header, name) for header, name, _ in columns] for model, e in rows]
    # Every column but the model's is as wide as its widest cell; a long model name (the catalog has names of
    # 70 characters) folds onto a second line rather than squeezing the prices
    widths = [max([len(header)] + [len(r[i]) for r in body]) for i, (header, _, _) in enumerate(columns)]
    gaps = len(columns) - 1 + (0 if narrow else 2)
    room = max(len("model"), width - gaps - sum(widths[1:]))
    for i, (header, _, _) in enumerate(columns):
        if header == "model":
            table.add_column(header, justify="left", overflow="fold", max_width=room)
        else:
            left = header == "provider"
            table.add_column(header, justify="left" if left else "right", no_wrap=True, min_width=widths[i])
    for cells in body:
        table.add_row(*cells)
    return table


def _cell(model: str, e: dict[str, Any], header: str, name: str) -> str:
    if header == "model":
        return model
    if name in ("litellm_provider", "max_input_tokens"):
        return str(e.get(name, "-"))
    return _per_million(e, name)


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
            import urllib.request

            try:  # the standard library's client: one download does not need a second HTTP library
                with urllib.request.urlopen(source, timeout=30) as resp:
                    text = resp.read().decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:  # URLError and HTTPError are OSErrors
                raise ConfigError(f"cannot fetch {source}: {exc}; download it elsewhere and pass --from FILE") from exc
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
