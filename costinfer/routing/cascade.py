"""``--route cascade``: check each routed answer of a cheaper candidate, and send the rows whose answer fails the check
to the next candidate.

The check runs on every answer a routed row got from a candidate below the strongest, wherever the answer came from
(this run's call, the cache, a reuse tier): a cached cheap answer that fails is escalated like a fresh one. An
escalated request is sent as the next model's own request (``Store.reroute``, tier 'escalated'), so its answer is
cached under that model's key; the failed answer stays in the ledger and the cache (it was paid, and it is that
model's true answer to that request). ``route`` on the row says which model answered and why.
"""

from __future__ import annotations

import orjson

from costinfer.reading.keys import KeyMaker
from costinfer.routing.checks import Acceptance, Answer
from costinfer.store.faces import Routing

PAGE = 5000


def escalate(store: Routing, run_id: str, candidates: list[str], acceptance: Acceptance, endpoint: str) -> int:
    """Check every unchecked routed answer; returns how many requests were escalated."""
    keys = KeyMaker(endpoint)
    escalated = 0
    while page := store.unchecked_answers(run_id, candidates[:-1], PAGE):
        answers = [
            Answer(
                key=str(a["key"]),
                text=a["response"],
                finish_reason=a["finish_reason"],
                model=str(a["model"]),
                request=orjson.loads(a["body"]),
                row_id=a["row_id"],
                metadata=a["metadata"],
            )
            for a in page
        ]
        accepted: list[tuple[str, str]] = []
        changes = []
        for answer, why in zip(answers, acceptance.reasons(answers), strict=True):
            if why is None:
                accepted.append((answer.key, f"{answer.model}: accepted"))
                continue
            stronger = candidates[candidates.index(answer.model) + 1]
            body = {**answer.request, "model": stronger}
            new_key, norm_key, group_key = keys.keys(body)
            changes.append(
                {
                    "key": answer.key,
                    "new_key": new_key,
                    "model": stronger,
                    "body": orjson.dumps(body).decode(),
                    "norm_key": norm_key,
                    "group_key": group_key,
                    "tier": "escalated",
                    "route": f"{answer.model}: {why}; escalated to {stronger}",
                }
            )
        store.mark_checked(run_id, accepted)
        store.reroute(run_id, changes)
        escalated += len(changes)
    return escalated
