"""A run's results: one row per good input row, in input order, built by one query (``RESULT_ROWS``) into a temporary
table once per run, a slice of rows at a time; the results file, the summary and the savings are read from that
table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from costinfer.store.base import ANSWER_AT, LENDER, Part, copy_atomically, one_dict, sql_str

# The result row: what answered it (fresh, duplicate, cache, normalized, semantic, fallback), what it cost (on the row
# that paid), and the error of its last call. ``not_run`` marks a row nothing answered and no call failed for.
# Requests that differ only in their model share one routed or fallback answer (the same prompt asked of two models,
# both falling back to the same third): the first row to ask for that answer pays for it, the others are duplicates.
RESULT_ROWS = f"""
    WITH last_error AS (
        SELECT key, arg_max(error_class || ': ' || coalesce(error_message, ''), finished_at) AS error
        FROM calls WHERE run_id = $run AND status = 'error' GROUP BY key),
    answer_first AS (
        SELECT answer_key, min(first_idx) AS first_idx FROM run_keys
        WHERE run_id = $run AND tier IN ('routed', 'escalated', 'fallback') GROUP BY answer_key),
    -- the routed answers a row of this run asked for itself: a small set, joined below instead of the run's whole
    -- run_keys (at a million rows, its hash table did not fit in 512 MB beside the others)
    asked AS (
        SELECT DISTINCT key FROM run_keys WHERE run_id = $run AND key IN (
            SELECT answer_key FROM run_keys WHERE run_id = $run AND tier IN ('routed', 'escalated', 'fallback'))),
    rows AS (
        SELECT i.row_idx, i.row_id, i.line, i.key, i.metadata, i.tag, rk.first_idx, rk.tier, rk.similarity,
               rk.answer_key, rk.routed, rk.route, q.model AS requested_model, r.run_id AS answered_by, r.response,
               r.model, r.provider, r.finish_reason, r.input_tokens, r.output_tokens, r.reasoning_tokens,
               r.cached_tokens, r.cache_write_tokens,
               -- a routed (or fallback) answer is paid on the row, unless a row of this run asked that request itself
               CASE WHEN rk.tier IN ('routed', 'escalated', 'fallback') AND asked.key IS NOT NULL THEN 0
                    ELSE r.cost_usd END AS cost_usd,
               -- an escalated row also paid for the answer that failed the check, when this run paid for it
               CASE WHEN rk.tier = 'escalated' AND own.run_id = $run THEN own.cost_usd ELSE 0 END AS checked_cost_usd,
               r.latency_ms, e.error,
               coalesce(af.first_idx < rk.first_idx, false) AS answer_shared
        FROM items i
        JOIN run_keys rk ON rk.run_id = i.run_id AND rk.key = i.key
        JOIN requests q ON q.key = i.key
        LEFT JOIN answer_first af ON af.answer_key = rk.answer_key AND rk.tier IN ('routed', 'escalated', 'fallback')
        LEFT JOIN asked ON asked.key = rk.answer_key AND rk.tier IN ('routed', 'escalated', 'fallback')
        {LENDER}
        LEFT JOIN responses r ON r.key = {ANSWER_AT}
        LEFT JOIN responses own ON own.key = i.key AND rk.tier = 'escalated'
        LEFT JOIN last_error e ON e.key = {ANSWER_AT}
        WHERE i.run_id = $run AND i.row_idx >= $from AND i.row_idx < $to),
    lenders AS (  -- the row whose answer a reused row got: in this run, else in the run that paid
        SELECT rk.key, min_by(i.row_id, i.row_idx) AS row_id
        FROM run_keys rk JOIN items i ON i.run_id = rk.run_id AND i.key = rk.key
        WHERE rk.key IN (SELECT answer_key FROM run_keys WHERE run_id = $run AND answer_key IS NOT NULL)
          AND (rk.run_id = $run OR rk.run_id = (SELECT run_id FROM responses WHERE responses.key = rk.key))
        GROUP BY rk.key)
    SELECT rows.row_id AS id, row_idx AS "row", response, coalesce(model, requested_model) AS model,
           provider,
           CASE WHEN answered_by IS NULL THEN NULL
                WHEN tier IN ('routed', 'escalated') THEN
                    CASE WHEN answered_by <> $run THEN 'cache'
                         -- an escalated row paid for its own checked answer, even when the strong one was shared
                         WHEN row_idx = first_idx AND (NOT answer_shared OR tier = 'escalated') THEN tier
                         ELSE 'duplicate' END
                WHEN tier = 'fallback' AND answered_by <> $run THEN 'cache'  -- an earlier run paid the fallback
                -- an earlier row's fallback call answered it (the same request, or another model's)
                WHEN tier = 'fallback' AND (answer_shared OR row_idx <> first_idx) THEN 'duplicate'
                WHEN tier IS NOT NULL THEN tier
                WHEN answered_by <> $run THEN 'cache'
                WHEN row_idx = first_idx THEN 'fresh' ELSE 'duplicate' END AS source,
           input_tokens, output_tokens, reasoning_tokens,
           CASE WHEN answered_by IS NULL THEN NULL
                WHEN row_idx <> first_idx THEN 0
                WHEN answered_by = $run AND coalesce(tier, 'fallback') IN ('fallback', 'routed', 'escalated')
                THEN CASE WHEN answer_shared THEN 0 ELSE cost_usd END + checked_cost_usd
                ELSE checked_cost_usd END::DECIMAL(38,12) AS cost_usd,
           CASE WHEN answered_by = $run AND coalesce(tier, 'fallback') IN ('fallback', 'routed', 'escalated')
                THEN latency_ms
                WHEN answered_by IS NULL THEN NULL ELSE 0 END AS latency_ms,
           finish_reason,
           CASE WHEN answered_by IS NULL THEN error END AS error,
           answered_by IS NULL AND error IS NULL AS not_run,
           CASE WHEN tier IS NOT NULL THEN similarity END AS similarity,
           CASE WHEN tier IN ('normalized', 'semantic') THEN l.row_id END AS reused_from,
           route, coalesce(routed, false) AS routed, cached_tokens, cache_write_tokens,
           metadata, rows.key, rows.tag
    FROM rows LEFT JOIN lenders l ON l.key = rows.answer_key
    ORDER BY row_idx
"""
_FILE_COLUMNS = (
    'id, "row", response, model, provider, source, input_tokens, output_tokens, reasoning_tokens, cost_usd, '
    "latency_ms, finish_reason, {error} AS error, similarity, reused_from, route, metadata, key"
)


# The results as a provider's batch output file, each line keyed by the row's id (its custom_id): what a pipeline built
# on the provider's batch console reads
BATCH_OUTPUT = {
    "openai-batch": """
        'costinfer_' || key AS id, id AS custom_id,
        CASE WHEN response IS NOT NULL THEN {
            'status_code': 200, 'request_id': key,
            'body': {'object': 'chat.completion', 'model': model,
                     'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': response},
                                  'finish_reason': finish_reason}],
                     'usage': {'prompt_tokens': input_tokens, 'completion_tokens': output_tokens,
                               'total_tokens': input_tokens + output_tokens}}} END AS response,
        CASE WHEN response IS NULL THEN {'code': 'costinfer_error', 'message': {error}} END AS error
    """,
    "anthropic-batch": """
        id AS custom_id,
        CASE WHEN response IS NOT NULL THEN {
            'type': 'succeeded', 'error': NULL,
            'message': {'type': 'message', 'role': 'assistant', 'model': model,
                        'content': [{'type': 'text', 'text': response}],
                        'stop_reason': CASE WHEN finish_reason = 'length' THEN 'max_tokens' ELSE 'end_turn' END,
                        'usage': {'input_tokens': input_tokens, 'output_tokens': output_tokens}}}
        ELSE {'type': 'errored', 'error': {'type': 'costinfer_error', 'message': {error}}, 'message': NULL} END
            AS result
    """,
}


# Rows built by one statement. Each carries its columns through a dozen joins, several over the run's whole tables: at
# 1,000,000 rows one statement needed more than 1.5 GB (DuckDB's bound is 1 GB) once the run had semantic reuses, and
# the run ended with an out-of-memory error and no results file. In slices of this many rows the same run's result
# rows build in 2.7-2.9 s at 1 GB (3.6 s at 512 MB); one statement took 1.6 s, given 2 GB.
RESULT_SLICE_ROWS = 262_144


class ResultsPart(Part):
    _results_of: str | None = None  # the run whose result rows the temporary table holds

    def collect_results(self, run_id: str) -> None:
        """Build the run's result rows once (after its calls): the file, the summary and the savings read them."""
        query = RESULT_ROWS.replace("$run", sql_str(run_id))
        found = self._con.execute("SELECT max(row_idx) FROM items WHERE run_id = ?", [run_id]).fetchone()
        last = int(found[0]) if found and found[0] is not None else -1
        self._con.execute(f"CREATE OR REPLACE TEMP TABLE run_results AS {_slice(query, 0, RESULT_SLICE_ROWS)}")
        for start in range(RESULT_SLICE_ROWS, last + 1, RESULT_SLICE_ROWS):  # in input order: the table's order
            self._con.execute(f"INSERT INTO run_results {_slice(query, start, start + RESULT_SLICE_ROWS)}")
        self._results_of = run_id

    def _results(self, run_id: str) -> None:
        if self._results_of != run_id:
            self.collect_results(run_id)

    def write_results(self, run_id: str, path: Path, fmt: str, not_run_reason: str) -> None:
        """Write one row per good input row, in input order, atomically (a temporary file, then a rename). ``fmt``:
        jsonl, parquet, or a provider's batch output format (openai-batch, anthropic-batch)."""
        self.collect_results(run_id)
        error = f"CASE WHEN not_run THEN {sql_str(not_run_reason)} ELSE error END"
        columns = BATCH_OUTPUT.get(fmt, _FILE_COLUMNS).replace("{error}", error)
        if fmt not in BATCH_OUTPUT:  # a rehearsal's rows say so: nothing was paid for them
            found = self._con.execute("SELECT rehearsal FROM runs WHERE run_id = ?", [run_id]).fetchone()
            columns += f", {bool(found and found[0])} AS rehearsal"
        options = "FORMAT PARQUET" if fmt == "parquet" else "FORMAT JSON"
        copy_atomically(self._con, f'SELECT {columns} FROM run_results ORDER BY "row"', path, options)

    def reuse_by_source(self, run_id: str) -> list[tuple[str, str, int, int, int]]:
        """(source, model, rows, input tokens, output tokens) of the rows answered without a call of their own."""
        self._results(run_id)
        rows = self._con.execute(
            """
            SELECT res.source, q.model, count(*), sum(q.input_tokens), sum(coalesce(res.output_tokens, 0))
            FROM run_results res JOIN requests q ON q.key = res.key
            WHERE res.source IN ('duplicate', 'cache', 'normalized', 'semantic')
            GROUP BY ALL
            """
        ).fetchall()
        return [(str(a), str(b), int(c), int(d), int(e)) for a, b, c, d, e in rows]

    def semantic_reuses(self, run_id: str, limit: int, seed: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows the semantic tier answered, drawn with ``seed``: the row's text, the text whose answer
        it took, their similarity and the answer, for a person to check."""
        self._results(run_id)
        text = "coalesce({q}.sem_text, json_extract_string({q}.body, '$.messages[#-1].content'))"
        rel = self._con.execute(
            f"""
            SELECT res.id, {text.format(q="q")} AS text1, {text.format(q="l")} AS text2, res.similarity,
                   res.response AS answer, res.reused_from
            FROM run_results res
            JOIN requests q ON q.key = res.key
            JOIN run_keys rk ON rk.run_id = $1 AND rk.key = res.key
            JOIN requests l ON l.key = rk.answer_key
            WHERE res.source = 'semantic'
            ORDER BY hash(res.id || $2) LIMIT $3
            """,
            [run_id, str(seed), limit],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]

    def summary(self, run_id: str) -> dict[str, Any]:
        self._results(run_id)
        row = self._con.execute(
            """
            SELECT count(*) AS rows,
                   count(*) FILTER (WHERE source = 'fresh') AS fresh,
                   count(*) FILTER (WHERE source = 'duplicate') AS duplicates,
                   count(*) FILTER (WHERE source = 'cache') AS cache_hits,
                   count(*) FILTER (WHERE source = 'normalized') AS normalized,
                   count(*) FILTER (WHERE source = 'semantic') AS semantic,
                   count(*) FILTER (WHERE source = 'fallback') AS fallback,
                   count(*) FILTER (WHERE source = 'routed') AS routed,
                   count(*) FILTER (WHERE source = 'escalated') AS escalated,
                   count(*) FILTER (WHERE error IS NOT NULL) AS failed,
                   count(*) FILTER (WHERE not_run) AS not_run,
                   (SELECT count(*) FROM rejects WHERE run_id = $1) AS rejects,
                   (SELECT count(*) FROM calls WHERE run_id = $1) AS run_calls,
                   (SELECT coalesce(sum(input_tokens), 0) FROM calls WHERE run_id = $1) AS input_tokens,
                   (SELECT coalesce(sum(output_tokens), 0) FROM calls WHERE run_id = $1) AS output_tokens,
                   (SELECT coalesce(sum(reasoning_tokens), 0) FROM calls WHERE run_id = $1) AS reasoning_tokens,
                   (SELECT coalesce(sum(cost_usd), 0) FROM calls WHERE run_id = $1) AS run_cost_usd
            FROM run_results
            """,
            [run_id],
        )
        return one_dict(row) or {}


def _slice(query: str, start: int, stop: int) -> str:
    """``RESULT_ROWS`` for the rows at positions ``start`` to ``stop`` (excluded)."""
    return query.replace("$from", str(start)).replace("$to", str(stop))
