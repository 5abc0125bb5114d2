"""``costinfer route evaluate``: how well a learned router would have done, replayed on the store's history.

The checked answers of the dataset are split by a hash of each request's key: ``HOLDOUT`` of them are held out, and
the router learns from every other checked answer in the store (the same checks, the same cheap model), exactly as
a run would. Its threshold is chosen as a run chooses it (by replaying the training answers at today's prices); the
held-out answers are then predicted, and each is priced as the learned route would have sent it (straight to the
strong model when predicted to fail, save the explored share) against the cascade (the cheap model first, the strong
one after a failed check). Both give every row an answer that passed the check or the strong model's: the same
quality, at different cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from costinfer.errors import ConfigError
from costinfer.pricing.catalog import ModelPrice
from costinfer.routing.learned import (
    MIN_HISTORY,
    THRESHOLDS,
    best_threshold,
    explores,
    fail_chance,
    features,
    history_costs,
)
from costinfer.store.faces import LearnedRoutes

HOLDOUT = 0.3


def held_out(key: str, share: float = HOLDOUT) -> bool:
    return int.from_bytes(hashlib.sha256(f"holdout:{key}".encode()).digest()[:8], "big") / 2**64 < share


def evaluate(
    store: LearnedRoutes,
    models: list[str],
    prices: dict[str, ModelPrice],
    check: str,
    dataset: str,
    embed: Callable[[list[str]], np.ndarray],
    holdout: float = HOLDOUT,
) -> dict[str, Any]:
    """The replay's figures (see the module's description)."""
    cheap, strong = models[0], models[1]
    history = store.check_history(cheap, check, "", 0)
    test = [h for h in history if h["input_path"] == dataset and held_out(str(h["key"]), holdout)]
    train = [h for h in history if not (h["input_path"] == dataset and held_out(str(h["key"]), holdout))]
    if not test:
        raise ConfigError(
            f"no checked answers of {cheap} for {dataset} in the store (with these checks): run the dataset with "
            f"--models {','.join(models)} --route cascade (or learned) first"
        )
    if len(train) < MIN_HISTORY:
        raise ConfigError(
            f"{len(train)} checked answers of {cheap} to learn from once {len(test)} are held out ({MIN_HISTORY} "
            f"needed): run more rows through the cascade first"
        )
    x_train, x_test = features(embed, train), features(embed, test, train)
    y_train, cheap_train, strong_train = history_costs(train, prices[cheap], prices[strong])
    y_test, cheap_test, strong_test = history_costs(test, prices[cheap], prices[strong])
    threshold, replay_share = best_threshold(
        fail_chance(x_train, y_train, x_train, leave_one_out=True), y_train, cheap_train, strong_train
    )
    chance = fail_chance(x_train, y_train, x_test)
    explored = np.array([explores(str(h["key"]), 0) for h in test])
    cascade = float((cheap_test + y_test * strong_test).sum())

    def at(t: float | None) -> dict[str, Any]:
        predicted = chance >= t if t is not None else np.zeros(len(test), dtype=bool)
        skipped = predicted & ~explored
        learned = float(np.where(skipped, strong_test, cheap_test + y_test * strong_test).sum())
        caught = int((predicted & (y_test > 0)).sum())
        return {
            "threshold": t,
            "predicted_fail": int(predicted.sum()),
            "precision": caught / int(predicted.sum()) if predicted.any() else None,
            "recall": caught / int(y_test.sum()) if y_test.any() else None,
            "skipped_cheap_calls": int(skipped.sum()),
            "learned_usd": learned,
            "saved_usd": cascade - learned,
            "saved_share": (cascade - learned) / cascade if cascade else 0.0,
        }

    return {
        "cheap": cheap,
        "strong": strong,
        "dataset": dataset,
        "trained_on": len(train),
        "held_out": len(test),
        "held_out_failures": int(y_test.sum()),
        "cascade_usd": cascade,
        "strong_only_usd": float(strong_test.sum()),
        "chosen": at(threshold),
        "replayed_saving_share": replay_share,
        "curve": [at(t) for t in THRESHOLDS],
    }
