"""Rebuild costinfer/data/model_prices.json from LiteLLM's price map in a litellm wheel (no network at run time).

    pip download --no-deps litellm==1.110.2 -d /tmp/ll
    .venv/bin/python scripts/catalog_snapshot.py /tmp/ll/litellm-*.whl

Kept: chat models of the providers costinfer can call (``PROVIDERS``), with the fields costinfer reads (``FIELDS``).
"""

from __future__ import annotations

import json
import sys
import zipfile
from datetime import date
from pathlib import Path

PROVIDERS = ("openai", "anthropic", "gemini", "azure", "bedrock_converse", "deepseek", "together_ai", "groq",
             "fireworks_ai", "mistral", "openrouter")  # fmt: skip
FIELDS = ("litellm_provider", "mode", "input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
          "cache_creation_input_token_cost", "input_cost_per_token_batches", "output_cost_per_token_batches",
          "max_input_tokens", "max_output_tokens", "supports_reasoning", "supports_function_calling",
          "supports_response_schema", "supports_prompt_caching", "cache_read_input_token_cost_batches",
          "cache_creation_input_token_cost_batches", "deprecation_date", "output_cost_per_reasoning_token")  # fmt: skip
MEMBER = "litellm/model_prices_and_context_window_backup.json"
DATA = Path(__file__).resolve().parent.parent / "costinfer" / "data"


def main() -> None:
    wheel = Path(sys.argv[1])
    with zipfile.ZipFile(wheel) as zf:
        data = json.loads(zf.read(MEMBER))
    kept = {
        name: {k: v for k, v in entry.items() if k in FIELDS}
        for name, entry in sorted(data.items())
        if isinstance(entry, dict) and entry.get("mode") == "chat" and entry.get("litellm_provider") in PROVIDERS
        and "input_cost_per_token" in entry
    }  # fmt: skip
    (DATA / "model_prices.json").write_text(json.dumps(kept, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    version = wheel.name.split("-")[1]
    source = {
        "source": f"{MEMBER} in the litellm {version} wheel on PyPI",
        "snapshot_date": str(date.today()),
        "filter": f"mode == chat and litellm_provider in ({', '.join(PROVIDERS)}); {', '.join(FIELDS[2:])}",
    }
    (DATA / "model_prices.source.json").write_text(json.dumps(source, indent=1) + "\n", encoding="utf-8")
    print(f"{len(kept)} models from {wheel.name}")


if __name__ == "__main__":
    main()
