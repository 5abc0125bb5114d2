"""``costinfer budget``: team budget pools that runs draw on with ``--budget-pool``."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Optional

import orjson
import typer
from rich.table import Table

from costinfer.cli.app import app, handled, open_for_reading, out_console
from costinfer.errors import ConfigError
from costinfer.store import Store
from costinfer.store.pools import PERIODS

budget_app = typer.Typer(
    help="Budget pools a team shares: set one, show what is spent and left. Runs draw on one with --budget-pool.",
    no_args_is_help=True,
)
StoreOpt = typer.Option(
    None, "--store", help="The store: a DuckDB file or postgresql://... Default: $COSTINFER_STORE or the per-user one."
)
app.add_typer(budget_app, name="budget")


@budget_app.command("set")
def set_pool(
    name: str = typer.Argument(..., help="The pool's name (letters, digits, '-', '_', '.')."),
    usd: str = typer.Option(..., "--usd", help="Dollars the pool's runs may spend in each period."),
    per: str = typer.Option("month", "--per", help=f"The period the limit renews: {', '.join(PERIODS)}."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Make a pool, or change its limit or period (what its runs spent is kept).

    \b
    Examples:
      costinfer budget set search-team --usd 500 --per month --store postgresql://ci@db/costinfer
      costinfer run data.jsonl --budget 20 --budget-pool search-team --store postgresql://ci@db/costinfer
    """
    with handled():
        try:
            amount = Decimal(usd.strip().lstrip("$").replace(",", ""))
        except InvalidOperation:
            raise ConfigError(f"--usd must be a number of dollars, got '{usd}'") from None
        with Store.open(store) as st:
            st.set_pool(name, amount, per)
            shown = next(p for p in st.pools() if p["name"] == name)
        out_console.print(
            f"pool {name}: ${shown['limit_usd']:.2f} per {per}; spent ${shown['spent_usd']:.6f}, "
            f"left ${shown['left_usd']:.6f}",
            markup=False,
        )


@budget_app.command("show")
def show(
    json_out: bool = typer.Option(False, "--json", help="One JSON array."), store: Optional[str] = StoreOpt
) -> None:
    """Each pool: its limit and period, what its runs spent this period, what calls in flight hold, what is left."""
    with handled(), open_for_reading(store) as st:
        pools = st.pools()
    if json_out:
        typer.echo(orjson.dumps(pools, default=str).decode())
        return
    table = Table(box=None, pad_edge=False, padding=(0, 1))
    for col in ("pool", "period", "limit", "spent", "held", "left"):
        table.add_column(col, justify="left" if col in ("pool", "period") else "right", no_wrap=True)
    for p in pools:
        table.add_row(
            p["name"], p["period_key"], f"${p['limit_usd']:.2f}", f"${p['spent_usd']:.6f}", f"${p['held_usd']:.6f}",
            f"${p['left_usd']:.6f}",
        )  # fmt: skip
    out_console.print(table, soft_wrap=False)
