"""The pipeline: read, key, dedupe, count and price, plan, execute, store, write. Never imports typer or rich."""
