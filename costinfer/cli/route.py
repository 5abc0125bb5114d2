"""``costinfer route evaluate``: a learned router replayed on the store's history, before a run relies on it."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Optional

import orjson
import typer
from rich.table import Table

from costinfer.cli.app import app, handled, open_for_reading, out_console
from costinfer.errors import ConfigError
from costinfer.pricing.catalog import Catalog
from costinfer.pricing.config_file import Config
from costinfer.reuse.embeddings import Embedder, missing_dependency
from costinfer.routing.checks import Acceptance
from costinfer.routing.evaluation import HOLDOUT, evaluate

route_app = typer.Typer(help="Routing across models: how a learned route would do.", no_args_is_help=True)
app.add_typer(route_app, name="route")


@route_app.command("evaluate")
def evaluate_command(
    dataset: Path = typer.Argument(..., help="The dataset whose checked answers are held out (as runs named it)."),
    models: str = typer.Option(..., "--models", help="The cheap candidate and the next, e.g. gpt-4o-mini,gpt-4o."),
    accept_regex: Optional[str] = typer.Option(None, help="The checks the runs used (the same --accept-* options)."),
    accept_json_schema: Optional[Path] = typer.Option(None, help="As in `costinfer run`."),
    accept_nonempty: bool = typer.Option(False, "--accept-nonempty", help="As in `costinfer run`."),
    accept_cmd: Optional[str] = typer.Option(None, help="As in `costinfer run`."),
    holdout: float = typer.Option(HOLDOUT, help="The share of the dataset's checked answers held out."),
    embedding_model: Optional[str] = typer.Option(None, help="As in `costinfer run` (default all-MiniLM-L6-v2)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object."),
    store: Optional[str] = typer.Option(
        None, "--store", help="The store (default: $COSTINFER_STORE or the per-user one)."
    ),
) -> None:
    """Replay the store's checked answers: hold out part of the dataset's, learn from the rest as a run would, and
    print precision and recall of "will fail" and the cost saved against the cascade at the same quality.

    \b
    Examples:
      costinfer route evaluate tickets.jsonl --models gpt-4o-mini,gpt-4o
      costinfer route evaluate tickets.jsonl --models gpt-4.1-mini,gpt-4.1 --accept-regex '^(yes|no)$' --json
    """
    with handled():
        names = [m.strip() for m in models.split(",") if m.strip()]
        if len(names) < 2:
            raise ConfigError(f"--models needs the cheap candidate and the next, cheapest first; got '{models}'")
        if not 0 < holdout < 1:
            raise ConfigError(f"--holdout must be between 0 and 1, got {holdout}")
        if (why := missing_dependency()) is not None:
            raise ConfigError(f"route evaluate embeds the prompts: {why}")
        catalog = Catalog.load(None, Config.load(None))
        prices = {m: catalog.lookup(m, "openai") for m in names[:2]}
        check = Acceptance(accept_regex, accept_json_schema, accept_nonempty, accept_cmd).fingerprint()
        with open_for_reading(store) as st:
            embedder = Embedder(st, embedding_model)
            # the runs' embeddings where the store has them (the learned runs stored them), computed otherwise
            embed = partial(embedder.embed, keep=False)
            figures = evaluate(st, names, prices, check, str(dataset.resolve()), embed, holdout)
    if json_out:
        typer.echo(orjson.dumps(figures).decode())
        return
    _show(figures)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _show(f: dict[str, Any]) -> None:
    chosen = f["chosen"]
    out_console.print(
        f"{f['cheap']} -> {f['strong']}: learned from {f['trained_on']} checked answers, {f['held_out']} held out "
        f"({f['held_out_failures']} failed the check).",
        markup=False,
    )
    if chosen["threshold"] is None:
        out_console.print(
            f"No threshold would have paid on the training answers (best replayed saving "
            f"{f['replayed_saving_share']:.1%}): a learned run would be the plain cascade here.",
            markup=False,
        )
    else:
        out_console.print(
            f'At the threshold a run would choose ({chosen["threshold"]:.2f}): "will fail" precision '
            f"{_pct(chosen['precision'])}, recall {_pct(chosen['recall'])}; {chosen['skipped_cheap_calls']} cheap "
            f"calls skipped; ${chosen['learned_usd']:.6f} against ${f['cascade_usd']:.6f} for the cascade (saves "
            f"{chosen['saved_share']:.1%}) and ${f['strong_only_usd']:.6f} for {f['strong']} alone.",
            markup=False,
        )
    table = Table(box=None, pad_edge=False, padding=(0, 1))
    for col in ("threshold", "predicted fail", "precision", "recall", "saved vs cascade"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in f["curve"]:
        table.add_row(
            f"{row['threshold']:.2f}", str(row["predicted_fail"]), _pct(row["precision"]), _pct(row["recall"]),
            f"{row['saved_share']:+.1%}",
        )  # fmt: skip
    out_console.print(table, soft_wrap=False)
