"""Options that several commands share, defined once so that their help cannot drift apart."""

from __future__ import annotations

import typer

from costinfer.core.dedupe import DEFAULT_THRESHOLD

FORMAT = typer.Option(None, "--format", help="jsonl, csv or parquet; default: by extension.")
PROMPT_FIELD = typer.Option("prompt", help="The column that holds the prompt text.")
ID_FIELD = typer.Option("id", help="The column that holds the row id; without one, the row position.")
TEMPLATE = typer.Option(None, help='Build the prompt from columns, e.g. "Classify: {text}".')
SYSTEM = typer.Option(None, help="A system prompt for rows that do not carry one.")
PRICES = typer.Option(None, help="A price catalog in LiteLLM's JSON format.")
CONFIG = typer.Option(None, help="costinfer.toml. Default: $COSTINFER_CONFIG or ./costinfer.toml")
SEMANTIC = typer.Option(
    None,
    "--semantic/--no-semantic",
    help="Reuse answers of near-duplicate requests (default: on, or $COSTINFER_SEMANTIC=0 for off).",
)
SEMANTIC_THRESHOLD = typer.Option(
    DEFAULT_THRESHOLD, help="Cosine similarity from which a near-duplicate may share an answer (guards apply)."
)
EMBEDDING_MODEL = typer.Option(
    None, help="A sentence-transformers model name or path (default: all-MiniLM-L6-v2, offline)."
)
STRICT_FIELDS = typer.Option(
    False,
    "--strict-fields",
    help="A row field costinfer does not know (a typo such as max_token) makes the row bad, instead of a warning.",
)
ON_BAD_ROW = typer.Option(
    "fail", help="fail: stop before any call if a row is bad (the safe default in CI); skip: run the rest."
)
