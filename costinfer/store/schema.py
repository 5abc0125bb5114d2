"""The store's schema: each migration a named function, applied once, in order, recorded in ``schema_migrations``."""

from __future__ import annotations

from collections.abc import Callable

import duckdb


def _m1_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, fingerprint VARCHAR NOT NULL, status VARCHAR NOT NULL,
            input_path VARCHAR, input_format VARCHAR, provider VARCHAR, endpoint VARCHAR, model VARCHAR,
            budget_usd DECIMAL(38,12), options JSON, rows BIGINT, rejects BIGINT, distinct_keys BIGINT,
            ingested BOOLEAN NOT NULL DEFAULT false,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(), finished_at TIMESTAMPTZ, stop_reason VARCHAR);
        CREATE TABLE items (
            run_id VARCHAR NOT NULL, row_idx BIGINT NOT NULL, line BIGINT NOT NULL, row_id VARCHAR NOT NULL,
            key VARCHAR NOT NULL, metadata JSON);
        CREATE TABLE rejects (
            run_id VARCHAR NOT NULL, row_idx BIGINT NOT NULL, line BIGINT NOT NULL, row_id VARCHAR,
            field VARCHAR NOT NULL, reason VARCHAR NOT NULL);
        CREATE TABLE requests (
            key VARCHAR PRIMARY KEY, endpoint VARCHAR NOT NULL, model VARCHAR NOT NULL, body JSON NOT NULL,
            input_tokens INTEGER NOT NULL, max_tokens INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        CREATE TABLE run_keys (
            run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, first_idx BIGINT NOT NULL, n_rows BIGINT NOT NULL);
        CREATE TABLE responses (
            key VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, provider VARCHAR NOT NULL, model VARCHAR NOT NULL,
            response VARCHAR, finish_reason VARCHAR, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL, cost_usd DECIMAL(38,12) NOT NULL, latency_ms DOUBLE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        CREATE TABLE calls (
            run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, provider VARCHAR NOT NULL, model VARCHAR NOT NULL,
            status VARCHAR NOT NULL, attempts INTEGER NOT NULL, http_status INTEGER, error_class VARCHAR,
            error_message VARCHAR, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL, cost_usd DECIMAL(38,12) NOT NULL, latency_ms DOUBLE,
            finished_at TIMESTAMPTZ NOT NULL DEFAULT now());
        """
    )


def _m2_bounds_and_priority(con: duckdb.DuckDBPyConnection) -> None:
    # input_bound: the most input tokens a request can be billed for (the budget reserves it);
    # priority: with --on-over-budget partial, higher-priority rows run first.
    con.execute(
        """
        ALTER TABLE requests ADD COLUMN input_bound INTEGER;
        UPDATE requests SET input_bound = input_tokens;
        ALTER TABLE items ADD COLUMN priority INTEGER DEFAULT 0;
        ALTER TABLE run_keys ADD COLUMN priority INTEGER DEFAULT 0;
        """
    )


def _m3_semantic(con: duckdb.DuckDBPyConnection) -> None:
    # norm_key: the normalized tier's key; group_key: the request without its last user message, the only part the
    # semantic tier may differ in; sem_text: that message. run_keys gain where their answer comes from.
    con.execute(
        """
        ALTER TABLE requests ADD COLUMN norm_key VARCHAR;
        ALTER TABLE requests ADD COLUMN group_key VARCHAR;
        ALTER TABLE requests ADD COLUMN sem_text VARCHAR;
        ALTER TABLE run_keys ADD COLUMN answer_key VARCHAR;
        ALTER TABLE run_keys ADD COLUMN tier VARCHAR;
        ALTER TABLE run_keys ADD COLUMN similarity DOUBLE;
        CREATE TABLE embeddings (
            model VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, vector FLOAT[] NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        """
    )


_REQUEST_COLUMNS = "key, endpoint, model, body, input_tokens, max_tokens, input_bound, norm_key, group_key, sem_text"


def _m4_requests_without_primary_key(con: duckdb.DuckDBPyConnection) -> None:
    # The primary key's index cost 1.6 s per 200,000 inserted requests (benchmarks/plan_scale.py). Uniqueness is kept
    # by ingestion instead: a run's new requests are staged, then added with one anti-join when ingestion ends.
    con.execute(
        f"""
        CREATE TABLE requests_v4 (
            key VARCHAR NOT NULL, endpoint VARCHAR NOT NULL, model VARCHAR NOT NULL, body JSON NOT NULL,
            input_tokens INTEGER NOT NULL, max_tokens INTEGER NOT NULL, input_bound INTEGER, norm_key VARCHAR,
            group_key VARCHAR, sem_text VARCHAR, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        INSERT INTO requests_v4 ({_REQUEST_COLUMNS}, created_at) SELECT {_REQUEST_COLUMNS}, created_at FROM requests;
        DROP TABLE requests;
        ALTER TABLE requests_v4 RENAME TO requests;
        CREATE TABLE ingest_requests (
            run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, endpoint VARCHAR NOT NULL, model VARCHAR NOT NULL,
            body JSON NOT NULL, input_tokens INTEGER NOT NULL, max_tokens INTEGER NOT NULL, input_bound INTEGER,
            norm_key VARCHAR, group_key VARCHAR, sem_text VARCHAR);
        """
    )


def _m5_no_staging(con: duckdb.DuckDBPyConnection) -> None:
    # Ingestion stores new requests straight into `requests` (content-addressed: a key is stored once), in batches
    # large enough that DuckDB writes them once; the staging table wrote every body twice.
    con.execute("DROP TABLE ingest_requests")


def _m6_reasoning_tokens(con: duckdb.DuckDBPyConnection) -> None:
    # Reasoning models bill hidden reasoning tokens as output: the ledger and the cache keep them as a column of their
    # own (a part of output_tokens), so a report can tell thinking from answering.
    con.execute("ALTER TABLE calls ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0")
    con.execute("ALTER TABLE responses ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0")


def _m7_run_sources(con: duckdb.DuckDBPyConnection) -> None:
    # Where a run's rows got their answers, per source and requested model, priced: what they would have cost as calls
    # of their own at list price (naive_usd) and what they cost (cost_usd). Reports and `costinfer analyze` read it.
    con.execute(
        """
        CREATE TABLE run_sources (
            run_id VARCHAR NOT NULL, source VARCHAR NOT NULL, model VARCHAR NOT NULL, rows BIGINT NOT NULL,
            input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
            naive_usd DECIMAL(38,12) NOT NULL, cost_usd DECIMAL(38,12) NOT NULL)
        """
    )


def _m8_tags(con: duckdb.DuckDBPyConnection) -> None:
    # Attribution: a row's tag ("team=search,project=faq": chosen metadata keys and the run's own tags), kept on its
    # item, on the ledger's calls (the tag of the row that paid) and on the run's priced sources
    for table in ("items", "calls", "run_sources"):
        con.execute(f"ALTER TABLE {table} ADD COLUMN tag VARCHAR")


def _m9_batches(con: duckdb.DuckDBPyConnection) -> None:
    # Provider batch jobs: recorded before anything is uploaded (state 'preparing'), then with the server's id
    # ('submitted'), then 'collected'. A process that dies in between finds its batches here (or on the server, by
    # their metadata) instead of submitting again. calls.mode says which calls were billed at batch prices.
    con.execute(
        """
        CREATE TABLE batches (
            local_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, part INTEGER NOT NULL, provider VARCHAR NOT NULL,
            endpoint VARCHAR NOT NULL, server_id VARCHAR, state VARCHAR NOT NULL, requests INTEGER NOT NULL,
            reserved_usd DECIMAL(38,12) NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ);
        CREATE TABLE batch_items (
            local_id VARCHAR NOT NULL, key VARCHAR NOT NULL, reserved_usd DECIMAL(38,12) NOT NULL);
        ALTER TABLE calls ADD COLUMN mode VARCHAR NOT NULL DEFAULT 'online';
        """
    )


def _m10_routing(con: duckdb.DuckDBPyConnection) -> None:
    # Routing across candidate models: a distinct request is ``routed`` when every row of it took the run's model
    # (a row's own model always wins). A routed request may be sent as another candidate's request (tier 'routed':
    # it did not fit the cheap model, or the budget upgraded it) or, in a cascade, escalated after its answer failed
    # the user's check (tier 'escalated'); ``route`` says why, ``route_checked`` that its current answer passed.
    # cache_write_tokens: input tokens written to a provider's prompt cache (Anthropic bills them above input).
    con.execute(
        """
        ALTER TABLE run_keys ADD COLUMN routed BOOLEAN NOT NULL DEFAULT false;
        ALTER TABLE run_keys ADD COLUMN route VARCHAR;
        ALTER TABLE run_keys ADD COLUMN route_checked BOOLEAN NOT NULL DEFAULT false;
        ALTER TABLE calls ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE responses ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
        """
    )


def _m11_server_counts(con: duckdb.DuckDBPyConnection) -> None:
    # counted_by 'server': the request's input tokens were counted by the server itself (vLLM's /tokenize, with its
    # chat template), exactly what it bills; NULL: costinfer's own tokenizer estimated them
    con.execute("ALTER TABLE requests ADD COLUMN counted_by VARCHAR")


def _m12_rehearsals(con: duckdb.DuckDBPyConnection) -> None:
    # rehearsal: the run's provider answers with made-up text and bills nothing (the simulator); its "spend" is what
    # the calls would have cost, kept apart from real money in runs, reports and analyze. Earlier runs: by provider.
    con.execute(
        """
        ALTER TABLE runs ADD COLUMN rehearsal BOOLEAN NOT NULL DEFAULT false;
        UPDATE runs SET rehearsal = true WHERE provider = 'simulate';
        """
    )


def _m13_run_record(con: duckdb.DuckDBPyConnection) -> None:
    # runs.options, a JSON bag of whatever a run wanted to keep, becomes columns with one meaning each: the routing
    # candidates and fallback (the account prices them), the model a self-hosted run is compared with, the rate
    # limit the run was paced under, where its results went, the running batch its server reached, ingestion's
    # notes, the semantic tier's state, and the plan (one JSON document, Plan.as_dict, decoded by the store).
    con.execute(
        """
        ALTER TABLE runs ADD COLUMN models VARCHAR[];
        ALTER TABLE runs ADD COLUMN fallback_model VARCHAR;
        ALTER TABLE runs ADD COLUMN compare_with VARCHAR;
        ALTER TABLE runs ADD COLUMN rate_limit_rpm DOUBLE;
        ALTER TABLE runs ADD COLUMN results_path VARCHAR;
        ALTER TABLE runs ADD COLUMN server_batch DOUBLE;
        ALTER TABLE runs ADD COLUMN notes VARCHAR[];
        ALTER TABLE runs ADD COLUMN semantic_note VARCHAR;
        ALTER TABLE runs ADD COLUMN plan JSON;
        UPDATE runs SET
            models = CAST(json_extract(options, '$.models') AS VARCHAR[]),
            fallback_model = json_extract_string(options, '$.fallback_model'),
            compare_with = json_extract_string(options, '$.compare_with'),
            rate_limit_rpm = coalesce(TRY_CAST(json_extract_string(options, '$.rpm') AS DOUBLE),
                                      TRY_CAST(json_extract_string(options, '$.simulator_rpm') AS DOUBLE)),
            results_path = json_extract_string(options, '$.results'),
            server_batch = TRY_CAST(json_extract_string(options, '$.server_batch') AS DOUBLE),
            notes = CAST(json_extract(options, '$.notes') AS VARCHAR[]),
            semantic_note = json_extract_string(options, '$.reuse.semantic_note'),
            plan = json_extract(options, '$.plan')
        WHERE options IS NOT NULL;
        ALTER TABLE runs DROP COLUMN options;
        """
    )


def _m14_budget_pools(con: duckdb.DuckDBPyConnection) -> None:
    # Budgets a team shares: a pool of dollars per period (month, week, day or in total) that every run naming it
    # draws on; a run's pool is kept with it so that the pool's spend is the ledger's calls of its runs.
    con.execute(
        """
        CREATE TABLE budget_pools (
            name VARCHAR PRIMARY KEY, limit_usd DECIMAL(38,12) NOT NULL, period VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ);
        ALTER TABLE runs ADD COLUMN budget_pool VARCHAR;
        """
    )


def _m15_learned_routing(con: duckdb.DuckDBPyConnection) -> None:
    # --route learned: each routed request the cheapest candidate would answer gets a round (rounds of rows in input
    # order, decided one after the other as checks arrive) and, once decided, the predicted chance that the cheap
    # answer fails the check (fail_p), the threshold in force, the checked answers it learned from and the decision:
    # 'cheap' (the cascade as usual), 'strong' (straight to the next candidate), 'explore' (predicted to fail, sent
    # to the cheap model anyway so that the router keeps learning) or 'cascade' (too little history to predict).
    # runs.route_check names the checks a run's answers passed or failed: a router learns from the same checks only.
    con.execute(
        """
        CREATE TABLE route_learned (
            run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, round INTEGER NOT NULL, fail_p DOUBLE,
            threshold DOUBLE, history INTEGER, decision VARCHAR, decided_at TIMESTAMPTZ);
        ALTER TABLE runs ADD COLUMN route_check VARCHAR;
        """
    )


MIGRATIONS: list[tuple[int, str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    (1, "initial schema: runs, items, rejects, requests, run_keys, responses, calls", _m1_initial),
    (2, "requests.input_bound for the budget's worst case; row priority", _m2_bounds_and_priority),
    (3, "normalized and semantic tiers: request norm/group keys, run_keys answers, embeddings", _m3_semantic),
    (4, "requests without a primary key; ingestion staged in ingest_requests", _m4_requests_without_primary_key),
    (5, "ingestion stores requests directly; the staging table is dropped", _m5_no_staging),
    (6, "reasoning tokens in the ledger and the cache", _m6_reasoning_tokens),
    (7, "run_sources: each run's rows by source and model, priced, for reports and analyze", _m7_run_sources),
    (8, "tags for cost attribution on items, calls and run_sources", _m8_tags),
    (9, "provider batch jobs and their items; calls.mode", _m9_batches),
    (10, "routing across models (run_keys.routed, route, route_checked); prompt-cache writes", _m10_routing),
    (11, "requests.counted_by: prompt tokens counted by the server (vLLM /tokenize)", _m11_server_counts),
    (12, "runs.rehearsal: runs whose provider pays nothing (the simulator)", _m12_rehearsals),
    (13, "runs.options replaced by columns: models, notes, plan, results_path, server_batch and more", _m13_run_record),
    (14, "budget pools shared by runs (budget_pools, runs.budget_pool)", _m14_budget_pools),
    (
        15,
        "learned routing: route_learned (each request's predicted failure and decision), runs.route_check",
        _m15_learned_routing,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
