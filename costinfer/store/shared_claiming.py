"""The shared store's coordination across processes: claims on the requests a run is about to pay for (so that each
distinct request is paid once across processes and machines) and the team's budget pools, both in PostgreSQL."""

from __future__ import annotations

import datetime
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import duckdb

from costinfer.errors import ConfigError
from costinfer.store.base import money
from costinfer.store.budget_pools import _pool_row, check_pool
from costinfer.store.claims import Claimed, SharedClaims
from costinfer.store.pools import Pool, period_key
from costinfer.store.postgres import Postgres, pull_into_duck
from costinfer.store.shared_pool import SharedPool, pool_state
from costinfer.store.store import Store


class Coordination(Store):
    """Claims and pools of a shared store (mixed into ``SharedStore``)."""

    pg: Postgres
    owner: str
    _lease: float

    def _cursor(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        raise NotImplementedError

    # --- claims

    def claims(self, run_id: str) -> SharedClaims | None:
        return SharedClaims(self, run_id)

    def claim_keys(self, run_id: str, keys: list[str]) -> Claimed:
        """Claim what no live run holds and nothing answers; copy in the answers found. One transaction."""
        found = Claimed()
        if not keys:
            return found

        def attempt(cur: Any) -> tuple[set[str], set[str]]:
            cur.execute("SELECT key FROM responses WHERE key = ANY(%s)", [keys])
            answered = {str(k) for (k,) in cur.fetchall()}
            rest = sorted(k for k in keys if k not in answered)
            mine: set[str] = set()
            if rest:
                # in key order (every statement on claims locks them so); a claim that is done stays: a run claiming
                # after the answer was stored finds it done, not free
                cur.execute(
                    "INSERT INTO claims (key, owner, run_id, lease_until) "
                    "SELECT k, %s, %s, now() + %s * interval '1 second' FROM unnest(%s::text[]) k ORDER BY k "
                    "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, run_id = excluded.run_id, "
                    "lease_until = excluded.lease_until "
                    "WHERE NOT claims.done AND (claims.lease_until < now() OR claims.owner = excluded.owner "
                    "OR claims.run_id = excluded.run_id) RETURNING key",
                    [self.owner, run_id, self._lease, rest],
                )
                mine = {str(k) for (k,) in cur.fetchall()}
            return answered, mine

        answered, mine = self.pg.retrying(attempt)
        if answered:  # on a cursor of its own: this runs in a worker thread beside the store's other users
            with self.pg.tx() as cur, self._cursor() as local:
                pull_into_duck(self.pg, local, "responses", "key = ANY(%s)", [sorted(answered)], cur=cur)
        found.answered = [k for k in keys if k in answered]
        found.mine = [k for k in keys if k in mine]
        found.waiting = [k for k in keys if k not in answered and k not in mine]
        return found

    def release_claims(self, keys: list[str] | None = None) -> None:
        """Let go of this process's open claims (or of these keys'), except those held for a provider batch."""
        only = "AND key = ANY(%s)" if keys is not None else ""
        self.pg.retrying(
            lambda cur: cur.execute(
                "UPDATE claims SET lease_until = now() - interval '1 second' WHERE key IN "
                f"(SELECT key FROM claims WHERE owner = %s AND NOT done {only} "
                "AND lease_until < now() + 2 * %s * interval '1 second' ORDER BY key FOR UPDATE)",
                [self.owner, *([keys] if keys is not None else []), self._lease],
            )
        )

    def hold_claims(self, keys: list[str], seconds: float) -> None:
        self.pg.retrying(
            lambda cur: cur.execute(
                "UPDATE claims SET lease_until = now() + %s * interval '1 second' WHERE key IN "
                "(SELECT key FROM claims WHERE owner = %s AND key = ANY(%s) ORDER BY key FOR UPDATE)",
                [seconds, self.owner, keys],
            )
        )

    # --- budget pools, shared

    def set_pool(self, name: str, usd: Decimal, period: str) -> None:
        check_pool(name, usd, period)
        with self.pg.tx() as cur:
            cur.execute(
                "INSERT INTO budget_pools (name, limit_usd, period, created_at) VALUES (%s, %s, %s, now()) "
                "ON CONFLICT (name) DO UPDATE SET limit_usd = excluded.limit_usd, period = excluded.period, "
                "updated_at = now()",
                [name, money(usd), period],
            )

    def pools(self) -> list[dict[str, Any]]:
        now = datetime.datetime.now(datetime.UTC)
        out = []
        with self.pg.tx() as cur:
            cur.execute("SELECT name, limit_usd, period FROM budget_pools ORDER BY name")
            for name, limit, period in cur.fetchall():
                key = period_key(str(period), now)
                spent, held = pool_state(cur, str(name), key, None)
                out.append(_pool_row(str(name), Decimal(limit), str(period), spent, held, now))
        return out

    def pool_for_run(self, name: str, run_id: str) -> Pool:
        with self.pg.tx() as cur:
            cur.execute("SELECT 1 FROM budget_pools WHERE name = %s", [name])
            if cur.fetchone() is None:
                raise ConfigError(
                    f"--budget-pool {name}: no such pool in {self.pg.name}; `costinfer budget set {name} --usd N`"
                )
        return SharedPool(self.pg, self.owner, self._lease, name, run_id)
