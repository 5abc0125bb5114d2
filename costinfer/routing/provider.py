"""Which provider a run calls when ``--provider`` is not given: the one that serves its model.

A run never rehearses by default: ``costinfer run prompts.jsonl`` with a GPT model calls OpenAI (and needs its key);
the simulator answers only when asked for by name (``--provider simulate``), and then every output says "rehearsal".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from costinfer.backends.base import Backend
from costinfer.errors import ConfigError
from costinfer.pricing.catalog import Catalog

REHEARSAL = "rehearsal: nothing was paid (--provider simulate answers with made-up text at list prices)"


def provider_of(model: str, catalog: Catalog, backends: Mapping[str, type[Backend]]) -> str | None:
    """The provider of ``model``: the one whose class claims its family by name (``Backend.model_names``), else the
    catalog's ``litellm_provider`` when costinfer has a backend of that name (or of that catalog prefix); None when
    neither says."""
    for name, cls in backends.items():
        if cls.model_names is not None and re.match(cls.model_names, model):
            return name
    entry = catalog.entry(model)
    named = str(entry.get("litellm_provider") or "") if entry else ""
    if named in backends:
        return named
    # a backend named otherwise than LiteLLM names its provider (together: together_ai)
    return next((name for name, cls in backends.items() if named and cls.catalog_prefix == named), None)


def choose_provider(
    given: str | None,
    models: list[str],
    catalog: Catalog,
    backends: Mapping[str, type[Backend]],
    several: bool = False,
) -> str:
    """``--provider`` when given; else the provider every named model belongs to, or a one-line error. ``several``
    (a plan): models of several providers are priced side by side, each at its own provider's price; the first
    model's provider is the plan's."""
    if given:
        return given
    found = {m: provider_of(m, catalog, backends) for m in models}
    unknown = [m for m, p in found.items() if p is None]
    if unknown:
        real = ", ".join(sorted(n for n, c in backends.items() if not c.rehearsal))
        raise ConfigError(
            f"cannot tell which provider serves model '{unknown[0]}': pass --provider ({real}, or simulate for a "
            f"rehearsal that pays nothing)"
        )
    providers = sorted({str(p) for p in found.values()})
    if len(providers) > 1 and several:
        return str(found[models[0]])
    if len(providers) > 1:
        pairs = ", ".join(f"{m}: {p}" for m, p in found.items())
        raise ConfigError(f"the run's models belong to different providers ({pairs}): pass --provider")
    return providers[0]
