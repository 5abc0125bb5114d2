"""``costinfer.toml``: price overrides, custom models and self-hosted models, read with tomllib.

Found at ``--config PATH``, else ``$COSTINFER_CONFIG``, else ``./costinfer.toml`` (absent is fine)::

    [catalog]
    max_age_days = 60                  # warn when the price catalog is older

    [models."my-finetune"]             # a custom model, LiteLLM's field names
    input_cost_per_token = 3e-6
    output_cost_per_token = 1.2e-5
    max_input_tokens = 128000
    litellm_provider = "openai"

    [models."gpt-4o-mini"]             # an override: only the fields given change
    input_cost_per_token = 1e-7

    [self_hosted."tiny"]               # priced from the GPU's cost and its measured throughput
    gpu_hour_usd = 1.20                # a run's measured GPU time x this, spread over its calls by tokens
    gpus = 1                           # GPUs per server (per replica)
    output_tokens_per_second = 1500
    input_tokens_per_second = 15000    # optional; default 10 x the output rate

    [providers.azure]                  # a provider's own settings (Azure OpenAI: its API version, deployments)
    api_version = "2024-10-21"
    deployments = { "gpt-4o-mini" = "mini-prod" }

    [routing]                          # the defaults of --models, --route and the cascade's checks
    models = ["gpt-4o-mini", "gpt-4o"] # tiers, cheapest first
    route = "cascade"
    accept_regex = "^(yes|no)$"        # also accept_json_schema = "schema.json", accept_nonempty, accept_cmd
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from costinfer.errors import ConfigError

ENV_CONFIG = "COSTINFER_CONFIG"
DEFAULT_MAX_AGE_DAYS = 60
_HOUR = Decimal(3600)


@dataclass
class Config:
    path: Path | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    routing: dict[str, Any] = field(default_factory=dict)  # [routing]: defaults of the routing options
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)  # [providers.NAME]: a provider's settings

    @classmethod
    def load(cls, path: Path | None = None) -> Config:
        if path is None:
            env = os.environ.get(ENV_CONFIG)
            path = Path(env) if env else Path("costinfer.toml")
            if not path.exists():
                if env:
                    raise ConfigError(f"{path}: ${ENV_CONFIG} names a config file that does not exist")
                return cls()
        try:
            data = tomllib.loads(path.read_text("utf-8"), parse_float=Decimal)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        models: dict[str, dict[str, Any]] = {}
        for name, entry in (data.get("models") or {}).items():
            if not isinstance(entry, dict):
                raise ConfigError(f'{path}: [models."{name}"] must be a table of LiteLLM price fields')
            models[name] = dict(entry)
        for name, entry in (data.get("self_hosted") or {}).items():
            models[name] = {**models.get(name, {}), **_self_hosted(path, name, entry)}
        age = (data.get("catalog") or {}).get("max_age_days", DEFAULT_MAX_AGE_DAYS)
        if not isinstance(age, int) or age < 1:
            raise ConfigError(f"{path}: [catalog] max_age_days must be a whole number of days, got {age!r}")
        providers = data.get("providers") or {}
        if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
            raise ConfigError(f"{path}: [providers.NAME] must be tables of a provider's settings")
        routing = _routing(path, data.get("routing") or {})
        return cls(path=path, models=models, max_age_days=age, routing=routing, providers=providers)


_ROUTING_KEYS: dict[str, type] = {
    "models": list,
    "route": str,
    "accept_regex": str,
    "accept_json_schema": str,
    "accept_nonempty": bool,
    "accept_cmd": str,
}


def _routing(path: Path, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [routing] must be a table")
    for key, value in table.items():
        kind = _ROUTING_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{path}: [routing] {key}: unknown; known: {', '.join(_ROUTING_KEYS)}")
        if not isinstance(value, kind) or (isinstance(value, list) and not all(isinstance(m, str) for m in value)):
            what = "a list of model names" if kind is list else kind.__name__
            raise ConfigError(f"{path}: [routing] {key} must be {what}")
    out = dict(table)
    if "accept_json_schema" in out:  # relative to the config file
        out["accept_json_schema"] = path.parent / out["accept_json_schema"]
    return out


def _self_hosted(path: Path, name: str, entry: Any) -> dict[str, Any]:
    """Per-token prices of a model on one's own GPU: what an hour costs, spread over the tokens it serves in it."""
    where = f'{path}: [self_hosted."{name}"]'
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    try:
        gpu_hour = Decimal(str(entry["gpu_hour_usd"]))
        out_tps = Decimal(str(entry["output_tokens_per_second"]))
    except KeyError as exc:
        raise ConfigError(f"{where} needs {exc.args[0]}") from None
    in_tps = Decimal(str(entry.get("input_tokens_per_second", out_tps * 10)))
    if gpu_hour < 0 or out_tps <= 0 or in_tps <= 0:
        raise ConfigError(f"{where}: gpu_hour_usd must be >= 0 and throughputs > 0")
    gpus = entry.get("gpus", 1)
    if not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"{where}: gpus must be a whole number of GPUs per server, got {gpus!r}")
    return {
        # the plan's and the budget's estimate; a run's measured GPU time replaces it in the ledger
        "input_cost_per_token": gpu_hour / _HOUR / in_tps,
        "output_cost_per_token": gpu_hour / _HOUR / out_tps,
        "gpu_hour_usd": gpu_hour,
        "gpus": gpus,
        "litellm_provider": "self_hosted",
        "mode": "chat",
        **{k: entry[k] for k in ("max_input_tokens", "max_output_tokens") if k in entry},
    }
