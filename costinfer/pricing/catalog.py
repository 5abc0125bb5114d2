"""Model prices in LiteLLM's ``model_prices_and_context_window.json`` format, as exact decimals.

The packaged snapshot is ``costinfer/data/model_prices.json`` (source and date in ``model_prices.source.json``).
Prices are read with ``parse_float=Decimal`` so that ``1.5e-07`` stays exactly 0.00000015 dollars per token.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from costinfer.errors import ConfigError
from costinfer.pricing.config_file import Config

ENV_PRICES = "COSTINFER_PRICES"

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model: str
    provider: str
    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    batch_input: Decimal
    batch_output: Decimal
    max_input_tokens: int | None
    max_output_tokens: int | None
    # an OpenAI reasoning model (o-series, gpt-5 family): it takes max_completion_tokens, bills hidden reasoning
    # tokens as output, and refuses sampling parameters other than their defaults
    reasoning: bool = False
    tools: bool = True  # takes function tools (the catalog's supports_function_calling; unknown: assumed)
    json_schema: bool = True  # takes response_format json_schema (supports_response_schema; unknown: assumed)
    gpu_hour_usd: Decimal | None = None  # a self-hosted model: what an hour of its server's GPUs costs, per GPU
    gpus: int = 1

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        *,
        batch: bool = False,
    ) -> Decimal:
        """Exact dollars for billed usage. ``cached_tokens`` (read from a prompt cache) and ``cache_write_tokens``
        (written to it) are parts of ``input_tokens``, each at its own price."""
        in_price, out_price = (self.batch_input, self.batch_output) if batch else (self.input, self.output)
        cached = min(cached_tokens, input_tokens)
        written = min(cache_write_tokens, input_tokens - cached)
        fresh = input_tokens - cached - written
        return fresh * in_price + cached * self.cached_input + written * self.cache_write + output_tokens * out_price

    def worst_case(self, input_tokens: int, max_tokens: int, *, batch: bool = False) -> Decimal:
        """The most a call can cost: every input token at its dearest input price, and every allowed output token."""
        if batch:
            return input_tokens * max(self.batch_input, self.cache_write) + max_tokens * self.batch_output
        return input_tokens * max(self.input, self.cache_write) + max_tokens * self.output


# OpenAI's reasoning families by name, for catalog entries that do not say (a custom model, an older snapshot)
_REASONING_NAMES = re.compile(r"^(?:openai/)?(?:o\d|gpt-5|gpt-6)")


def is_reasoning_model(model: str, entry: dict[str, Any]) -> bool:
    """An OpenAI reasoning model: the catalog's ``supports_reasoning``, or the family's name. Only OpenAI's protocol
    changes for them (Anthropic's thinking models take the same request shape as any other)."""
    if str(entry.get("litellm_provider", "openai")) != "openai":
        return False
    return bool(entry.get("supports_reasoning")) or bool(_REASONING_NAMES.match(model))


@functools.cache
def _self_hosted(provider: str) -> bool:
    """Whether a provider runs models on the user's own hardware, as its class declares (``Backend.self_hosted``)."""
    from costinfer.backends.base import provider_class

    cls = provider_class(provider)
    return bool(cls is not None and cls.self_hosted)


def _catalog_prefix(provider: str) -> str | None:
    """The prefix of a provider's models in LiteLLM's names, as its class declares (``Backend.catalog_prefix``)."""
    from costinfer.backends.base import provider_class

    cls = provider_class(provider)
    return None if cls is None else cls.catalog_prefix


def parse_catalog(text: str, source: str) -> dict[str, dict[str, Any]]:
    """Parse and check a catalog in LiteLLM's format: an object of model name to an object of prices."""
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: the price catalog is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the price catalog must be a JSON object of model name to prices")
    priced = {k: v for k, v in data.items() if isinstance(v, dict) and "input_cost_per_token" in v}
    if not priced:
        raise ConfigError(f"{source}: no model in it has input_cost_per_token: not a LiteLLM price catalog")
    for model, entry in priced.items():
        check_prices(entry, f"{source}: model '{model}'")
    return priced


_MONEY_FIELDS = re.compile(r"(?:_cost_per_token(?:_batches)?|_token_cost|^gpu_hour_usd)$")


def check_prices(entry: dict[str, Any], where: str) -> None:
    """Every price of an entry is a number of dollars, zero or more: a catalog with "abc" for a price is refused
    where it is read (it once broke every later run), not when the first call is priced."""
    for name, value in entry.items():
        if not _MONEY_FIELDS.search(name) or value is None:
            continue
        try:
            amount = value if isinstance(value, Decimal) else Decimal(str(value))
            ok = not isinstance(value, bool) and amount.is_finite() and amount >= 0
        except ArithmeticError:
            ok = False
        if not ok:
            raise ConfigError(f"{where}: field '{name}': must be a number of dollars (0 or more), got {value!r}")


def _sidecar_date(path: Path) -> date | None:
    side = path.with_name(path.stem + ".source.json")
    try:
        return date.fromisoformat(json.loads(side.read_text("utf-8"))["snapshot_date"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _dec(entry: dict[str, Any], name: str, default: Decimal = ZERO) -> Decimal:
    value = entry.get(name)
    if value is None:
        return default
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _int(entry: dict[str, Any], name: str) -> int | None:
    value = entry.get(name)
    return int(value) if isinstance(value, (int, Decimal)) else None


def data_dir() -> Path:
    """Where costinfer keeps per-user files: ``$XDG_DATA_HOME/costinfer`` (``~/.local/share/costinfer``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "costinfer"


def updated_catalog_path() -> Path:
    """Where ``costinfer prices update`` writes the catalog it fetched."""
    return data_dir() / "model_prices.json"


class Catalog:
    """Model name to price. ``lookup`` raises ``ConfigError`` naming the fix for a model it does not know."""

    def __init__(self, entries: dict[str, dict[str, Any]], source: str, snapshot_date: date | None = None) -> None:
        self.source = source
        self.snapshot_date = snapshot_date
        self._entries = {name: e for name, e in entries.items() if isinstance(e, dict) and "input_cost_per_token" in e}

    @classmethod
    def load(cls, path: Path | None = None, config: Config | None = None) -> Catalog:
        """The catalog in force: ``path``, else ``$COSTINFER_PRICES``, else the one ``prices update`` wrote, else the
        packaged snapshot; then the config file's overrides and custom models on top."""
        if path is None and os.environ.get(ENV_PRICES):
            path = Path(os.environ[ENV_PRICES])
        if path is None and updated_catalog_path().exists():
            path = updated_catalog_path()
        snapshot: date | None
        if path is None:
            pkg = resources.files("costinfer.data")
            text = pkg.joinpath("model_prices.json").read_text("utf-8")
            meta = json.loads(pkg.joinpath("model_prices.source.json").read_text("utf-8"))
            source = f"packaged snapshot of {meta['snapshot_date']}"
            snapshot = date.fromisoformat(meta["snapshot_date"])
        else:
            try:
                text = path.read_text("utf-8")
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read the price catalog: {exc.strerror}") from exc
            source = str(path)
            snapshot = _sidecar_date(path)
        catalog = cls(parse_catalog(text, source), source, snapshot)
        if config is not None:
            for name, fields in config.models.items():
                catalog._entries[name] = {**catalog._entries.get(name, {}), **fields}
            if config.models:
                catalog.source += f" + {config.path}"
        return catalog

    def age_warning(self, max_age_days: int, today: date | None = None) -> str | None:
        if self.snapshot_date is None:
            return None
        age = ((today or date.today()) - self.snapshot_date).days
        if age <= max_age_days:
            return None
        return (
            f"the price catalog is {age} days old ({self.source}); prices may have changed: run "
            f"`costinfer prices update`"
        )

    def __contains__(self, model: str) -> bool:
        return model in self._entries

    def models(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, model: str) -> dict[str, Any] | None:
        return self._entries.get(model)

    def lookup(self, model: str, provider: str) -> ModelPrice:
        # the provider's own entry first (azure/gpt-4o-mini is Azure's price of gpt-4o-mini), under its prefix in
        # LiteLLM's names (together_ai/..., azure/...); then the name itself; then the one entry ending with it
        # (gemini-2.5-flash-lite is gemini/gemini-2.5-flash-lite)
        prefix = _catalog_prefix(provider)
        entry = self._entries.get(f"{prefix}/{model}") if prefix and not model.startswith(f"{prefix}/") else None
        entry = entry or self._entries.get(model) or self._entries.get(f"{provider}/{model}") or self._suffixed(model)
        if entry is None:
            if _self_hosted(provider):  # the user's own hardware: a model missing from the catalog costs nothing
                return ModelPrice(model, provider, ZERO, ZERO, ZERO, ZERO, ZERO, ZERO, None, None)
            raise ConfigError(
                f"no price for model '{model}' in the catalog ({self.source}){self._did_you_mean(model)}; add it "
                f'under [models."{model}"] in costinfer.toml (or [self_hosted."{model}"] for your own GPU), pass '
                f"--prices FILE, or pick a model that `costinfer prices list` shows"
            )
        return ModelPrice(
            model=model,
            provider=str(entry.get("litellm_provider", provider)),
            input=_dec(entry, "input_cost_per_token"),
            output=_dec(entry, "output_cost_per_token"),
            cached_input=_dec(entry, "cache_read_input_token_cost", _dec(entry, "input_cost_per_token")),
            cache_write=_dec(entry, "cache_creation_input_token_cost", _dec(entry, "input_cost_per_token")),
            # without a batch price in the catalog, the providers' documented half of the online one
            batch_input=_dec(entry, "input_cost_per_token_batches", _dec(entry, "input_cost_per_token") / 2),
            batch_output=_dec(entry, "output_cost_per_token_batches", _dec(entry, "output_cost_per_token") / 2),
            max_input_tokens=_int(entry, "max_input_tokens"),
            max_output_tokens=_int(entry, "max_output_tokens"),
            reasoning=is_reasoning_model(model, entry),
            tools=entry.get("supports_function_calling") is not False,
            json_schema=entry.get("supports_response_schema") is not False,
            gpu_hour_usd=_dec(entry, "gpu_hour_usd") if entry.get("gpu_hour_usd") is not None else None,
            gpus=int(entry.get("gpus") or 1),
        )

    def _suffixed(self, model: str) -> dict[str, Any] | None:
        found = [e for name, e in self._entries.items() if name.endswith(f"/{model}")]
        return found[0] if len(found) == 1 else None

    def _did_you_mean(self, model: str) -> str:
        import difflib

        close = difflib.get_close_matches(model, self.models(), n=1, cutoff=0.8)
        return f": did you mean '{close[0]}'?" if close else ""
