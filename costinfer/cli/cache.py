"""``costinfer cache calibrate|stats|clear|export|prune``: the response cache and the semantic threshold."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from costinfer.cli.app import app, err_console, handled, open_for_reading, out_console
from costinfer.errors import ConfigError, ExitCode, WriteError
from costinfer.reuse.calibration import load_pairs, objections, recommend, similarities, sweep, vetoes
from costinfer.spec import DEFAULT_THRESHOLD
from costinfer.store import Store

cache_app = typer.Typer(help="The response cache, its embeddings, and the semantic threshold.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

EXPORT_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
StoreOpt = typer.Option(
    None, "--store", help="The store: a DuckDB file or postgresql://... Default: $COSTINFER_STORE or the per-user one."
)


@cache_app.command("calibrate")
def calibrate(
    pairs: Path = typer.Argument(..., help="CSV or JSONL of text pairs: text1, text2, label (0/1 or a graded score)."),
    target_precision: float = typer.Option(0.97, help="The precision the recommended threshold must reach."),
    positive_min: float = typer.Option(0.5, help="Graded labels: from this score a pair is 'same answer'."),
    negative_max: float = typer.Option(0.5, help="Graded labels: below this score a pair is 'different'."),
    embedding_model: Optional[str] = typer.Option(None, help="A sentence-transformers model name or path."),
    store: Optional[str] = StoreOpt,
    json_out: bool = typer.Option(False, "--json", help="Print the table and the recommendation as JSON."),
) -> None:
    """Print precision, recall and hit rate per threshold, and the lowest threshold that reaches the target."""
    with handled():
        from costinfer.reuse.content_words import WordSimilarity
        from costinfer.reuse.embeddings import Embedder, missing_dependency

        why = missing_dependency()
        if why:
            raise ConfigError(f"calibration needs the semantic tier: {why}")
        data = load_pairs(pairs, positive_min, negative_max)
        with Store.open(store) as st:
            embedder = Embedder(st, embedding_model)
            thresholds = [t / 100 for t in range(70, 100)]
            sims = similarities(data, embedder)
            objected = objections(data, sims, min(thresholds), WordSimilarity(embedder.encode))
            rows = sweep(data, sims, thresholds, objected)
        best = recommend(rows, target_precision)
        refused = vetoes(data, sims, objected, DEFAULT_THRESHOLD)
        if json_out:
            typer.echo(
                json.dumps(
                    {
                        "pairs": len(data),
                        "rows": [r.__dict__ for r in rows],
                        "recommended": best.__dict__ if best else None,
                        "vetoes_at_default": {k: {"pairs": n, "labelled_same": m} for k, (n, m) in refused.items()},
                    }
                )
            )
        else:
            table = Table(title=f"{len(data)} pairs ({sum(p.same for p in data)} same), guards applied")
            for col in ("threshold", "precision", "recall", "hit rate", "matches"):
                table.add_column(col, justify="right")
            for r in rows:
                table.add_row(
                    f"{r.threshold:.2f}", f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.hit_rate:.3f}", str(r.matches)
                )
            out_console.print(table)
            if refused:
                out_console.print(
                    f"at the default threshold {DEFAULT_THRESHOLD} the guards refused: "
                    + ", ".join(f"{k} {n} ({same} labelled same)" for k, (n, same) in refused.items()),
                    markup=False,
                )
            if best:
                out_console.print(
                    f"recommended --semantic-threshold {best.threshold:.2f}: precision "
                    f"{best.precision:.3f}, recall {best.recall:.3f}, hit rate {best.hit_rate:.3f}"
                )
        if best is None:
            err_console.print(f"no threshold reaches precision {target_precision}", markup=False)
            raise typer.Exit(int(ExitCode.ROWS_FAILED))


@cache_app.command("stats")
def stats(store: Optional[str] = StoreOpt, json_out: bool = typer.Option(False, "--json")) -> None:
    """What the cache holds, what it cost, and how many embeddings are kept."""
    with handled(), open_for_reading(store) as st:
        data = st.cache_stats()
        data["paid_usd"] = str(data["paid_usd"])
        data["store"] = str(st.path)
        if json_out:
            typer.echo(json.dumps(data))
        else:
            for name, value in data.items():
                out_console.print(f"{name}: {value}", markup=False)


@cache_app.command("clear")
def clear(store: Optional[str] = StoreOpt, yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Forget every cached answer and embedding (the ledger of calls and costs is kept)."""
    with handled():
        if not yes and not sys.stdin.isatty():
            raise ConfigError("cache clear asks before it forgets; with no terminal to ask on, pass --yes")
        with Store.open(store, create=False) as st:
            if not yes and not typer.confirm(f"Forget every cached answer in {st.path}?", default=False):
                err_console.print("nothing was forgotten", markup=False)
                raise typer.Exit(1)
            n = st.clear_cache()
        out_console.print(f"{n} cached answers forgotten; the ledger is kept", markup=False)


@cache_app.command("prune")
def prune(
    older_than: int = typer.Option(..., help="Forget answers older than this many days."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Forget cached answers older than N days (the ledger of calls and costs is kept)."""
    with handled():
        if older_than < 0:
            raise ConfigError("--older-than must be zero or more days")
        with Store.open(store, create=False) as st:
            n = st.prune_cache(older_than)
        out_console.print(f"{n} cached answers older than {older_than} days forgotten", markup=False)


@cache_app.command("export")
def export(
    path: Path = typer.Argument(..., help="Where to write: .jsonl, .csv or .parquet."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Write every cached answer with its request as JSONL, CSV or Parquet."""
    with handled():
        fmt = EXPORT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{path}: export writes .jsonl, .csv or .parquet; name a file with one of those")
        if not path.parent.is_dir():
            raise ConfigError(f"{path}: the folder {path.parent} does not exist")
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; name a file")
        with Store.open(store, create=False) as st:
            try:
                n = st.export_cache(path, fmt)
            except OSError as exc:
                raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
        out_console.print(f"{n} cached answers written to {path}", markup=False)
