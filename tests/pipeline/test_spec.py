"""The run spec on its own: built once from the command's options, frozen, each stage's values checked when made,
derived values computed, and the defaults that depend on something else filled in by the builder alone."""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from pathlib import Path

import pytest

from costinfer.errors import ConfigError
from costinfer.pipeline.build import run_spec
from costinfer.spec import DEFAULT_DEADLINE_H, RunSpec


def test_the_builder_fills_the_defaults_that_depend_on_something_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COSTINFER_CONFIG", raising=False)
    monkeypatch.setenv("COSTINFER_SEMANTIC", "0")
    spec = run_spec("data.jsonl.gz", budget="$2.50", base_url=["http://a:1/v1", "http://b:2/v1"], tag_by="team, env")
    assert spec.output.results == tmp_path / "data.results.jsonl"  # named after the dataset, in the working folder
    assert spec.output.rejects == tmp_path / "data.results.rejects.jsonl"
    assert spec.output.beside("report.html") == tmp_path / "data.results.report.html"
    assert spec.money.budget_usd == Decimal("2.50")
    assert spec.execution.base_url == "http://a:1/v1" and spec.execution.replicas == ("http://b:2/v1",)
    assert spec.input.tag_by == ("team", "env")
    assert spec.reuse.semantic is False  # $COSTINFER_SEMANTIC
    assert run_spec("d.jsonl", semantic=True).reuse.semantic is True  # the command line wins


def test_a_spec_is_frozen_and_its_derived_values_are_computed(tmp_path: Path) -> None:
    spec = run_spec(tmp_path / "d.jsonl", output=tmp_path / "o.jsonl")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.routing.model = "gpt-4o"  # type: ignore[misc]
    assert spec.batch.hours == DEFAULT_DEADLINE_H and not spec.batch.deadline_given
    assert run_spec(tmp_path / "d.jsonl", deadline_h=2.0).batch.deadline_given
    routed = run_spec(tmp_path / "d.jsonl", models="gpt-4o-mini,gpt-4o", accept_regex="^yes$")
    assert routed.routing.policy == "cascade" and routed.routing.default_model == "gpt-4o-mini"
    assert run_spec(tmp_path / "d.jsonl", models="gpt-4o-mini,gpt-4o").routing.policy == "cheapest"
    assert all(len(dataclasses.fields(f.type if isinstance(f.type, type) else getattr(spec, f.name))) <= 15
               for f in dataclasses.fields(RunSpec))  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_tokens": 0}, "--max-tokens must be at least 1, got 0"),
        ({"semantic_threshold": 1.5}, "--semantic-threshold must be in (0, 1]"),
        ({"budget": "-1"}, "--budget must be zero or more dollars"),
        ({"budget": "lots"}, "--budget must be a number of dollars, got 'lots'"),
        ({"mode": "fast"}, "--mode must be online, batch or auto, got 'fast'"),
        ({"timeout_s": float("nan")}, "--timeout must be a finite number"),
        ({"models": "gpt-4o"}, "--models needs two models or more"),
        ({"route": "cascade"}, "--route and --accept-* need --models"),
        ({"models": "a,b", "route": "budget"}, "--route budget needs --budget"),
        ({"models": "a,b", "accept_regex": "x", "mode": "batch"}, "--route cascade needs answers before it can"),
        ({"ray_serve": "vllm serve m --port {port}"}, "--ray-serve starts servers on Ray: it needs --engine ray"),
        ({"output": "out.csv"}, "the results file must end in .jsonl or .parquet"),
        ({"base_url": ["http://user:pw@host/v1"]}, "credentials"),
        ({"tags": ["team"]}, "--tag must be KEY=VALUE"),
    ],
)
def test_an_invalid_value_cannot_make_a_spec(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_spec("d.jsonl", **options)


def test_costinfer_toml_fills_routing_options_the_command_line_left_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "costinfer.toml"
    config.write_text('[routing]\nmodels = ["gpt-4o-mini", "gpt-4o"]\naccept_regex = "^(yes|no)$"\n')
    spec = run_spec("d.jsonl", config=config)
    assert spec.routing.models == ("gpt-4o-mini", "gpt-4o") and spec.routing.policy == "cascade"
    cheapest = run_spec("d.jsonl", config=config, route="cheapest")  # the file's cascade checks do not apply
    assert cheapest.routing.policy == "cheapest" and cheapest.routing.accept.regex is None


def test_an_unknown_option_is_a_programming_error_not_a_silent_default() -> None:
    with pytest.raises(TypeError, match="max_token"):
        run_spec("d.jsonl", max_token=5)


def test_every_option_of_run_is_a_keyword_the_builder_knows_and_none_is_missing() -> None:
    from costinfer.cli.options import PARAMS
    from costinfer.pipeline.build import KNOWN, OUTPUT_SWITCHES

    names = {name for name, _, _ in PARAMS} - {"input_path"}
    assert names == KNOWN | OUTPUT_SWITCHES
