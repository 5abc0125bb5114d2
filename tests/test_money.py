"""Money: the plan before spending, the catalog and its overrides, and the budget that always holds."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from costinfer.errors import ExitCode
from costinfer.pricing.catalog import Catalog
from costinfer.simulator import Simulator
from tests.conftest import SAMPLE, Cli, read_jsonl, write_jsonl


def plan_json(cli: Cli, *args: object, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = cli("plan", *map(str, args), "--json", env=env)
    return result.exit_code, json.loads(result.stdout)


def test_plan_predicts_the_simulated_run_within_ten_percent(
    cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path
) -> None:
    code, plan = plan_json(cli, SAMPLE, "--budget", "1", "--store", store_path, "--base-url", sim.url)
    assert code == 0
    assert sim.requests == 0  # planning sends nothing
    assert plan["rows"] == 500 and plan["distinct"] == 460 and plan["duplicates"] == 40 and plan["to_call"] == 460
    assert plan["fits"] is True
    result = cli(
        "run",
        SAMPLE,
        "--budget",
        "1",
        "--store",
        store_path,
        "--base-url",
        sim.url,
        "--output",
        tmp_path / "o.jsonl",
        "--json",
    )
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    spent, expected = Decimal(summary["cost_usd"]), Decimal(plan["expected_cost_usd"])
    assert abs(expected - spent) / spent <= Decimal("0.10"), (expected, spent)
    assert summary["input_tokens"] == plan["input_tokens"]  # the simulator bills what costinfer counts
    assert spent <= Decimal(plan["worst_cost_usd"])
    assert summary["plan"]["expected_cost_usd"] == plan["expected_cost_usd"]  # run showed the same plan first
    # the next plan of the same data is answered by the cache
    _, again = plan_json(cli, SAMPLE, "--budget", "1", "--store", store_path, "--base-url", sim.url)
    assert again["to_call"] == 0 and again["cache_hits"] == 500 and again["expected_cost_usd"] == "0"


def test_the_ledger_teaches_the_plan_expected_output(
    cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path
) -> None:
    first = write_jsonl(
        tmp_path / "a.jsonl", [{"prompt": f"Tell me about item {i}", "max_tokens": 400} for i in range(60)]
    )
    second = write_jsonl(
        tmp_path / "b.jsonl", [{"prompt": f"Describe thing {i}", "max_tokens": 400} for i in range(60)]
    )
    _, before = plan_json(cli, second, "--store", store_path, "--base-url", sim.url)
    assert before["models"][0]["output_basis"].startswith("default")
    assert (
        cli("run", first, "--store", store_path, "--base-url", sim.url, "-o", tmp_path / "a.out.jsonl").exit_code == 0
    )
    _, after = plan_json(cli, second, "--store", store_path, "--base-url", sim.url)
    assert after["models"][0]["output_basis"] == "ledger: this model and max_tokens"
    result = cli("run", second, "--store", store_path, "--base-url", sim.url, "-o", tmp_path / "b.out.jsonl", "--json")
    actual = json.loads(result.stdout)["output_tokens"]
    assert abs(after["expected_output_tokens"] - actual) < abs(before["expected_output_tokens"] - actual)
    assert abs(after["expected_output_tokens"] - actual) / actual < 0.25


def test_over_budget_fails_before_any_call(cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path) -> None:
    result = cli(
        "run",
        SAMPLE,
        "--budget",
        "0.01",
        "--store",
        store_path,
        "--base-url",
        sim.url,
        "--output",
        tmp_path / "o.jsonl",
    )
    assert result.exit_code == ExitCode.BUDGET
    assert sim.requests == 0
    assert "nothing was sent" in result.stderr and "--on-over-budget partial" in result.stderr
    assert "DOES NOT FIT" in result.stderr  # the plan was shown first
    code, _ = plan_json(cli, SAMPLE, "--budget", "0.01", "--store", store_path, "--base-url", sim.url)
    assert code == ExitCode.BUDGET


def test_partial_runs_rows_in_priority_then_input_order(
    cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path
) -> None:
    rows = [
        {"id": f"r{i}", "prompt": f"question {i}", "max_tokens": 100, "priority": 5 if i % 10 == 0 else 0}
        for i in range(100)
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "o.jsonl"
    result = cli(
        "run",
        data,
        "--budget",
        "0.0003",
        "--store",
        store_path,
        "--base-url",
        sim.url,
        "--output",
        out,
        "--on-over-budget",
        "partial",
        "-c",
        "1",
        "--json",
    )
    assert result.exit_code == ExitCode.BUDGET
    summary = json.loads(result.stdout)
    assert Decimal(summary["run_cost_usd"]) <= Decimal("0.0003")
    answered = [r["id"] for r in read_jsonl(out) if r["response"]]
    high = [f"r{i}" for i in range(0, 100, 10)]
    low = [f"r{i}" for i in range(100) if i % 10]
    assert 10 < len(answered) < 100
    assert set(high) <= set(answered)  # every priority row ran before any other
    rest = [a for a in answered if a not in high]
    assert rest == low[: len(rest)]  # then the others, in input order


def test_prices_update_from_file_changes_the_plan(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}"} for i in range(20)])
    _, before = plan_json(cli, data, "--store", store_path, env=env)
    catalog = json.loads((Path(__file__).parent.parent / "costinfer" / "data" / "model_prices.json").read_text())
    catalog["gpt-4o-mini"]["input_cost_per_token"] *= 10
    catalog["gpt-4o-mini"]["output_cost_per_token"] *= 10
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(catalog))
    result = cli("prices", "update", "--from", newer, env=env)
    assert result.exit_code == 0 and "saved to" in result.stdout
    _, after = plan_json(cli, data, "--store", store_path, env=env)
    assert Decimal(after["expected_cost_usd"]) == 10 * Decimal(before["expected_cost_usd"])
    shown = cli("prices", "show", "gpt-4o-mini", env=env)
    assert json.loads(shown.stdout)["usd_per_million_tokens"]["input_cost_per_token"] == "1.5"


def test_prices_update_refuses_a_file_that_is_not_a_catalog(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": "world"}')
    result = cli("prices", "update", "--from", bad, env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert result.exit_code == ExitCode.USAGE
    assert "not a LiteLLM price catalog" in result.stderr


def test_unknown_row_model_fails_before_any_call_naming_the_fix(
    cli: Cli, sim: Simulator, tmp_path: Path, store_path: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}, {"prompt": "b", "model": "gpt-99-ultra"}])
    result = cli("run", data, "--store", store_path, "--base-url", sim.url, "--output", tmp_path / "o.jsonl")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "no price for model 'gpt-99-ultra'" in result.stderr
    assert '[models."gpt-99-ultra"] in costinfer.toml' in result.stderr
    assert sim.requests == 0


def test_config_file_custom_model_override_and_self_hosted(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    config = tmp_path / "costinfer.toml"
    config.write_text(
        '[models."my-finetune"]\ninput_cost_per_token = 2e-6\noutput_cost_per_token = 8e-6\n'
        'litellm_provider = "openai"\n\n'
        '[models."gpt-4o-mini"]\ninput_cost_per_token = 1e-6\n\n'
        '[self_hosted."tiny"]\ngpu_hour_usd = 3.60\noutput_tokens_per_second = 1000\n'
    )
    catalog = Catalog.load(None, __import__("costinfer.pricing.config_file", fromlist=["Config"]).Config.load(config))
    assert catalog.lookup("my-finetune", "openai").input == Decimal("0.000002")
    mini = catalog.lookup("gpt-4o-mini", "openai")
    assert mini.input == Decimal("0.000001") and mini.output == Decimal("6E-7")  # only the given field changed
    tiny = catalog.lookup("tiny", "vllm")
    assert tiny.output == Decimal("0.000001")  # $3.60/h over 1000 tokens/s
    assert tiny.input == Decimal("1E-7")  # default input rate: 10x the output rate
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "model": "my-finetune", "max_tokens": 10}])
    code, plan = plan_json(cli, data, "--store", store_path, "--config", config)
    assert code == 0 and plan["models"][0]["model"] == "my-finetune"


def test_bad_config_file_is_a_configuration_error(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    config = tmp_path / "costinfer.toml"
    config.write_text('[self_hosted."x"]\ngpu_hour_usd = 1\n')
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    result = cli("plan", data, "--store", store_path, "--config", config)
    assert result.exit_code == ExitCode.USAGE
    assert "needs output_tokens_per_second" in result.stderr


def test_an_old_catalog_is_a_warning() -> None:
    catalog = Catalog.load()
    assert catalog.snapshot_date is not None
    assert catalog.age_warning(60, today=catalog.snapshot_date + timedelta(days=10)) is None
    warning = catalog.age_warning(60, today=catalog.snapshot_date + timedelta(days=90))
    assert warning is not None and "90 days old" in warning and "costinfer prices update" in warning
    assert date.today() >= catalog.snapshot_date


def test_prices_list_filters_by_provider(cli: Cli) -> None:
    result = cli("prices", "list", "--provider", "anthropic", "--json")
    models = json.loads(result.stdout)
    assert models and all(e["litellm_provider"] == "anthropic" for e in models.values())
    assert "gpt-4o-mini" not in models
