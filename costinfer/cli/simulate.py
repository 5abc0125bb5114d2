"""``costinfer simulate serve``: run the OpenAI-compatible simulator for other tools and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from costinfer.cli.app import app, err_console, handled
from costinfer.errors import ConfigError
from costinfer.simulator import SimulatorConfig, serve_forever
from costinfer.simulator.config import Answers, BatchBehaviour
from costinfer.simulator.faults import LIMIT_MODES, parse_bad_answers, parse_faults

simulate_app = typer.Typer(help="The built-in OpenAI-compatible simulator.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")


@simulate_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8099, min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    latency_ms: float = typer.Option(0.0, help="Mean answer latency in milliseconds."),
    jitter_ms: float = typer.Option(0.0, help="Uniform jitter around the latency, in milliseconds."),
    log: Optional[Path] = typer.Option(None, help="Append one JSON line per request (with its status) to this file."),
    faults: Optional[str] = typer.Option(
        None, help='Faults to inject, e.g. "429=0.05,5xx=0.1,timeout=0.02,malformed=0.01,drop=0.01,truncated=0.01".'
    ),
    rpm: Optional[int] = typer.Option(None, help="Enforce a requests-per-minute limit (429 past it, OpenAI headers)."),
    tpm: Optional[int] = typer.Option(None, help="Enforce a tokens-per-minute limit (prompt + max_tokens)."),
    limit_mode: str = typer.Option(
        "window",
        help="How --rpm/--tpm are enforced: window (a sliding minute), bucket (a token bucket, full at the start), "
        "second (one-second windows behind a bucket's headers).",
    ),
    retry_after: float = typer.Option(1.0, help="Seconds an injected 429 asks the client to wait."),
    slow_s: float = typer.Option(120.0, help="How long an injected timeout keeps the client waiting."),
    seed: Optional[int] = typer.Option(None, help="Seed of the fault draws, for repeatable rehearsals."),
    down_model: list[str] = typer.Option([], help="A model in an outage: every request for it gets a 503."),
    batch_delay: float = typer.Option(0.5, help="Seconds a batch takes to complete (the Batch API)."),
    batch_fail_rate: float = typer.Option(0.0, help="Share of batch items answered with an error."),
    batch_expire_rate: float = typer.Option(0.0, help="Share of batch items that expire unanswered."),
    bad_answers: Optional[str] = typer.Option(
        None, help='The share of a model\'s answers that are bad (refusals), e.g. "gpt-4o-mini=0.3" (see --seed).'
    ),
    bad_prompts: Optional[Path] = typer.Option(
        None, help="A file of prompts, one per line, that the --bad-answers models always answer badly."
    ),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", help="Accept only this key (each protocol's own error for any other); default: any key."
    ),
    aws_key: Optional[str] = typer.Option(
        None, "--aws-key", help="Bedrock: ACCESS_KEY_ID:SECRET, the one key pair whose SigV4 signatures are accepted."
    ),
    max_running: Optional[int] = typer.Option(
        None, help="Like vLLM: requests answered at once (the running batch); the rest wait (see /metrics)."
    ),
    max_model_len: Optional[int] = typer.Option(None, help="Like vLLM: the context length /v1/models reports."),
    no_prompt_cache: bool = typer.Option(
        False, "--no-prompt-cache", help="Report no cached prompt tokens (by default repeated prefixes are cached)."
    ),
) -> None:
    """Serve OpenAI chat completions (/v1/chat/completions) and Anthropic messages (/v1/messages) with
    deterministic answers and realistic usage until SIGINT or SIGTERM; vLLM's /tokenize and /metrics too."""
    with handled():
        try:
            injected = parse_faults(faults, seed, retry_after, slow_s)
        except ValueError as exc:
            raise ConfigError(f"--faults: {exc}") from None
        try:
            bad = parse_bad_answers(bad_answers)
        except ValueError as exc:
            raise ConfigError(f"--bad-answers: {exc}") from None
        named: frozenset[str] = frozenset()
        if bad_prompts is not None:
            try:
                named = frozenset(line for line in bad_prompts.read_text("utf-8").splitlines() if line.strip())
            except OSError as exc:
                raise ConfigError(f"--bad-prompts {bad_prompts}: cannot read it: {exc.strerror}") from None
        cfg = SimulatorConfig(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            log_path=log,
            faults=injected,
            rpm=rpm,
            tpm=tpm,
            limit_mode=limit_mode,
            down_models=tuple(down_model),
            batch=BatchBehaviour(delay_s=batch_delay, fail_rate=batch_fail_rate, expire_rate=batch_expire_rate),
            seed=seed,
            answers=Answers(bad_answers=bad, bad_prompts=named),
            prompt_cache=not no_prompt_cache,
            max_running=max_running,
            max_model_len=max_model_len,
            api_key=api_key,
            aws_key=_key_pair(aws_key),
        )
        if limit_mode not in LIMIT_MODES:
            raise ConfigError(f"--limit-mode must be one of {', '.join(LIMIT_MODES)}, got '{limit_mode}'")

        if log is not None and not log.parent.is_dir():
            raise ConfigError(f"--log {log}: the folder {log.parent} does not exist")

        def ready(url: str) -> None:
            err_console.print(f"simulator listening on {url}", markup=False)
            print(url, flush=True)

        try:
            serve_forever(host, port, cfg, on_ready=ready)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port (0 picks a free one)"
            ) from None


def _key_pair(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    key_id, _, secret = text.partition(":")
    if not key_id or not secret:
        raise ConfigError("--aws-key must be ACCESS_KEY_ID:SECRET")
    return key_id, secret
