"""How a simulator behaves: latency, the answers' lengths, faults, enforced limits, models in an outage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from costinfer.simulator.faults import Faults


@dataclass(frozen=True, slots=True)
class Answers:
    """What the simulator answers: how long, how much hidden reasoning, and which answers are bad."""

    min_output_tokens: int = 4
    max_output_tokens: int = 48
    min_reasoning_tokens: int = 16  # a reasoning model's hidden thinking per answer (o-series, gpt-5 family)
    max_reasoning_tokens: int = 96
    # model -> share of its requests answered badly (a refusal): a cheap model a cascade must escalate from
    bad_answers: tuple[tuple[str, float], ...] = ()
    bad_prompts: frozenset[str] = frozenset()  # last messages those models always answer badly


@dataclass(frozen=True, slots=True)
class BatchBehaviour:
    """How the simulator's batch API behaves."""

    delay_s: float = 0.5  # a batch completes this long after it was created
    fail_rate: float = 0.0  # share of batch items answered with an error (in the error file)
    expire_rate: float = 0.0  # share of batch items that expire unanswered


@dataclass(slots=True)
class SimulatorConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    log_path: Path | None = None
    faults: Faults = field(default_factory=Faults)
    rpm: int | None = None  # enforced requests per minute (429 past it)
    tpm: int | None = None  # enforced tokens per minute: prompt tokens plus max_tokens, as OpenAI counts them
    limit_mode: str = "window"  # how rpm/tpm are enforced: window (sliding minute), bucket, second (see faults.py)
    down_models: tuple[str, ...] = ()  # models in an outage: every request for them gets a 503 (529 on Anthropic's)
    seed: int | None = None  # the batch items' failures (and the bad answers) are drawn with it
    api_key: str | None = None  # the one key accepted (the provider's own error for any other); None: any key
    aws_key: tuple[str, str] | None = None  # Bedrock: the (access key id, secret) whose signatures are accepted
    prompt_cache: bool = True  # report cached prompt tokens for repeated prefixes, as each provider does
    # vLLM's side: requests answered at once (the running batch; the rest wait), and the context length /v1/models and
    # /tokenize report; /metrics gives the queue in vLLM's names
    max_running: int | None = None
    max_model_len: int | None = None
    answers: Answers = field(default_factory=Answers)
    batch: BatchBehaviour = field(default_factory=BatchBehaviour)
