"""What a run will cost, before anything is sent: a plain value that ``costinfer plan`` prints and tests compare.

Expected output tokens are learned from the ledger, most specific first (each level needs ``MIN_SAMPLES`` answered
calls): the same model and ``max_tokens`` in earlier runs of the same dataset; the same model and ``max_tokens`` in
any run; the model's mean ratio of output tokens to ``max_tokens``; else ``DEFAULT_OUTPUT_FRACTION`` of
``max_tokens``. Expected input tokens are the counted ones, corrected by the model's ratio of billed to counted input
tokens in the ledger (this is what corrects the estimate for other providers' tokenizers). The worst case is every
request billed its input bound and its full ``max_tokens``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from costinfer.pricing.catalog import ModelPrice
from costinfer.store.faces import Planning

MIN_SAMPLES = 10
DEFAULT_OUTPUT_FRACTION = Decimal("0.5")


@dataclass
class ModelLine:
    model: str
    requests: int
    input_tokens: int
    input_bound: int
    expected_output_tokens: int
    worst_output_tokens: int
    expected_cost_usd: Decimal
    worst_cost_usd: Decimal
    output_basis: str  # where the expected output came from
    expected_batch_cost_usd: Decimal = Decimal(0)  # the same requests through the provider's batch API


@dataclass
class Plan:
    rows: int
    rejects: int
    distinct: int
    duplicates: int
    cache_hits: int  # rows answered by earlier runs
    normalized: int  # rows answered by the normalized-text tier
    semantic: int  # rows answered by the semantic tier
    answered_in_run: int  # distinct requests this run already answered (a resumed run)
    to_call: int  # distinct requests still to send
    models: list[ModelLine]
    budget_usd: Decimal | None
    spent_usd: Decimal  # what this run already spent (a resumed run)
    notes: list[str] = field(default_factory=list)
    # what each lever is expected to save against the naive cost (see core/levers.py)
    levers: dict[str, Decimal] = field(default_factory=dict)
    routing: dict[str, Any] | None = None  # --models: where the rows go, and the cost with and without routing
    compare: dict[str, Any] | None = None  # --compare-with: the same expected tokens at another model's prices
    longest_prompt: int = 0  # the most input tokens of a request still to send

    @property
    def input_tokens(self) -> int:
        return sum(m.input_tokens for m in self.models)

    @property
    def expected_output_tokens(self) -> int:
        return sum(m.expected_output_tokens for m in self.models)

    @property
    def worst_output_tokens(self) -> int:
        return sum(m.worst_output_tokens for m in self.models)

    @property
    def expected_cost_usd(self) -> Decimal:
        return sum((m.expected_cost_usd for m in self.models), Decimal(0))

    @property
    def expected_batch_cost_usd(self) -> Decimal:
        return sum((m.expected_batch_cost_usd for m in self.models), Decimal(0))

    @property
    def worst_cost_usd(self) -> Decimal:
        return sum((m.worst_cost_usd for m in self.models), Decimal(0))

    @property
    def left_usd(self) -> Decimal | None:
        return None if self.budget_usd is None else self.budget_usd - self.spent_usd

    @property
    def fits(self) -> bool:
        """The expected cost fits in what is left of the budget."""
        left = self.left_usd
        return left is None or self.expected_cost_usd <= left

    @property
    def fits_worst_case(self) -> bool:
        left = self.left_usd
        return left is None or self.worst_cost_usd <= left

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in (
            "input_tokens",
            "expected_output_tokens",
            "worst_output_tokens",
            "expected_cost_usd",
            "expected_batch_cost_usd",
            "worst_cost_usd",
            "left_usd",
            "fits",
            "fits_worst_case",
        ):
            out[name] = getattr(self, name)
        result: dict[str, Any] = _jsonable(out)
        return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("0", "-0") else text
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class OutputModel:
    """Expected output tokens per (model, max_tokens), learned from the ledger."""

    def __init__(self, store: Planning, input_path: str | None) -> None:
        rows = store.output_history(input_path)
        self._bucket: dict[tuple[str, int, bool], tuple[int, Decimal]] = {}
        self._ratio: dict[str, list[int]] = {}  # model -> [n, out_sum, cap_sum, billed_in, counted_in]
        for model, max_tokens, same, n, mean_out, out_sum, cap_sum, billed_in, counted_in in rows:
            self._bucket[(model, int(max_tokens), bool(same))] = (int(n), Decimal(str(mean_out)))
            acc = self._ratio.setdefault(model, [0, 0, 0, 0, 0])
            for i, v in enumerate((n, out_sum, cap_sum, billed_in, counted_in)):
                acc[i] += int(v)

    def expected(self, model: str, max_tokens: int) -> tuple[Decimal, str]:
        """Expected output tokens of one request, and the basis of the figure."""
        for same, basis in ((True, "ledger: this dataset"), (False, "ledger: this model and max_tokens")):
            n, mean = self._bucket.get((model, max_tokens, same), (0, Decimal(0)))
            if n >= MIN_SAMPLES:
                return min(mean, Decimal(max_tokens)), basis
        acc = self._ratio.get(model)
        if acc and acc[0] >= MIN_SAMPLES and acc[2]:
            return Decimal(acc[1]) / Decimal(acc[2]) * max_tokens, "ledger: this model's share of max_tokens"
        return DEFAULT_OUTPUT_FRACTION * max_tokens, f"default: {DEFAULT_OUTPUT_FRACTION} of max_tokens"

    def input_correction(self, model: str) -> Decimal:
        """Billed over counted input tokens for this model (1 until the ledger has enough calls)."""
        acc = self._ratio.get(model)
        if not acc or acc[0] < MIN_SAMPLES or not acc[4]:
            return Decimal(1)
        return Decimal(acc[3]) / Decimal(acc[4])


def compute(
    store: Planning,
    run_id: str,
    prices: dict[str, ModelPrice],
    budget_usd: Decimal | None,
    input_path: str | None,
    notes: list[str] | None = None,
) -> Plan:
    counts = store.plan_counts(run_id)
    groups = store.pending_groups(run_id)
    learned = OutputModel(store, input_path)
    lines: dict[str, ModelLine] = {}
    longest = 0
    for model, max_tokens, n, counted, bound, most in groups:
        longest = max(longest, most)
        price = prices[model]
        per_request, basis = learned.expected(model, max_tokens)
        expected_out = ceil_tokens(per_request * n)
        expected_in = ceil_tokens(counted * learned.input_correction(model))
        line = lines.setdefault(model, ModelLine(model, 0, 0, 0, 0, 0, Decimal(0), Decimal(0), basis))
        line.requests += n
        line.input_tokens += expected_in
        line.input_bound += bound
        line.expected_output_tokens += expected_out
        line.worst_output_tokens += n * max_tokens
        line.expected_cost_usd += price.cost(expected_in, expected_out)
        line.expected_batch_cost_usd += price.cost(expected_in, expected_out, batch=True)
        line.worst_cost_usd += price.worst_case(bound, n * max_tokens)
        if basis != line.output_basis:
            line.output_basis = "mixed"
    return Plan(
        rows=counts["rows"],
        rejects=store.rejects_count(run_id),
        distinct=counts["distinct_keys"],
        duplicates=counts["rows"] - counts["distinct_keys"],
        cache_hits=counts["cache_rows"],
        normalized=counts["normalized_rows"],
        semantic=counts["semantic_rows"],
        answered_in_run=counts["done_keys"],
        to_call=counts["pending_keys"],
        models=list(lines.values()),
        budget_usd=budget_usd,
        spent_usd=store.run_spend(run_id),
        notes=list(notes or []),
        longest_prompt=longest,
    )


def ceil_tokens(value: Decimal | int) -> int:
    return int(Decimal(value).to_integral_value(rounding=ROUND_CEILING))
