"""Each kind of bad input: one line naming file, line and field; the documented exit code; the rejects file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from costinfer.errors import ExitCode
from tests.conftest import Cli, read_jsonl, write_jsonl

GOOD = {"prompt": "hello there"}


def run(cli: Cli, data: Path, store: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    out = data.parent / "out.jsonl"
    return cli("run", data, "--store", store, "--output", out, "--quiet", *extra, env=env)


def only_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize(
    ("line2", "field", "reason"),
    [
        (b'{"prompt": "unterminated', "(line)", "malformed JSON"),
        (b'{"prompt": "caf\xe9"}', "(line)", "not valid UTF-8: byte 0xe9"),
        (b'{"text": "no prompt here"}', "prompt", "missing"),
        (b'{"prompt": 42}', "prompt", "must be text, got a number"),
        (b'{"prompt": "x", "max_tokens": "many"}', "max_tokens", "must be an integer"),
        (b'{"prompt": "x", "temperature": 7}', "temperature", "must be between 0 and 2"),
        (b'{"prompt": "x", "messages": [{"role": "user", "content": "y"}]}', "prompt", "not both"),
        (b'{"messages": [{"role": "robot", "content": "y"}]}', "messages[0].role", "must be one of"),
        (b"[1, 2]", "(line)", "expected a JSON object"),
        (b'{"prompt": "x", "model": "no-such-model-9"}', "model", "no price for model 'no-such-model-9'"),
    ],
)
def test_bad_jsonl_row_fails_before_any_call(
    cli: Cli, tmp_path: Path, store_path: Path, sim: object, line2: bytes, field: str, reason: str
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"prompt": "first row"}\n' + line2 + b'\n{"prompt": "third row"}\n')
    result = run(cli, data, store_path)
    assert result.exit_code == ExitCode.BAD_INPUT
    line = only_line(result.stderr)
    assert f"{data}:line 2: field '{field}': " in line
    assert reason in line
    assert "nothing was sent" in line
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert rejects == [
        {"file": str(data), "line": 2, "id": rejects[0]["id"], "field": field, "reason": rejects[0]["reason"]}
    ]
    assert reason in rejects[0]["reason"]
    assert not (tmp_path / "out.jsonl").exists()
    assert sim.requests == 0  # type: ignore[attr-defined]


def test_skip_keeps_the_invariant_rows_in_equals_results_plus_rejects(
    cli: Cli, tmp_path: Path, store_path: Path
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(
        b'{"id": "a", "prompt": "one"}\n'
        b'{"id": "b", "prompt": \n'
        b"\n"
        b'{"id": "a", "prompt": "duplicate id"}\n'
        b'{"id": "c", "prompt": "three"}\n'
        b'{"id": "d"}\n'
    )
    result = run(cli, data, store_path, "--on-bad-row", "skip", "--provider", "simulate", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    results = read_jsonl(tmp_path / "out.jsonl")
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [r["id"] for r in results] == ["a", "c"]
    assert [(r["line"], r["field"]) for r in rejects] == [(2, "(line)"), (4, "id"), (6, "prompt")]
    assert "duplicate id 'a'" in rejects[1]["reason"]
    assert summary["rows"] + summary["rejects"] == 5 == len(results) + len(rejects)
    assert "3 bad rows skipped" in result.stderr


def test_empty_file(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_bytes(b"")
    result = run(cli, data, store_path)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert only_line(result.stderr) == f"error: {data}: the file is empty: no rows to run"


def test_blank_lines_only(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = tmp_path / "blank.jsonl"
    data.write_bytes(b"\n\n  \n")
    result = run(cli, data, store_path)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "holds no rows" in only_line(result.stderr)


def test_unknown_extension(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("hello\n")
    result = run(cli, data, store_path)
    assert result.exit_code == ExitCode.BAD_INPUT
    line = only_line(result.stderr)
    assert "cannot tell the format from the extension '.txt'" in line and "--format" in line


def test_format_override_reads_an_odd_extension(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.txt", [GOOD])
    result = run(cli, data, store_path, "--format", "jsonl")
    assert result.exit_code == 0, result.stderr


def test_missing_file(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    result = run(cli, tmp_path / "nope.jsonl", store_path)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "no such file" in only_line(result.stderr)


def test_prompt_longer_than_the_models_context(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "tiny-ctx": {
                    "input_cost_per_token": 1e-6,
                    "output_cost_per_token": 2e-6,
                    "max_input_tokens": 40,
                    "max_output_tokens": 100,
                    "litellm_provider": "openai",
                    "mode": "chat",
                }
            }
        )
    )
    data = write_jsonl(tmp_path / "data.jsonl", [GOOD, {"prompt": "word " * 200}])
    result = run(cli, data, store_path, "--prices", prices, "--model", "tiny-ctx", "--max-tokens", "50")
    assert result.exit_code == ExitCode.BAD_INPUT
    line = only_line(result.stderr)
    assert f"{data}:line 2: field 'prompt': the prompt is " in line
    assert "tiny-ctx accepts at most 40" in line


def test_max_tokens_above_what_the_model_can_write(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "x", "max_tokens": 10_000_000}])
    result = run(cli, data, store_path)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "field 'max_tokens': 10000000 is more than gpt-4o-mini can write" in only_line(result.stderr)


def test_csv_rows_name_their_line(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(b'id,prompt,max_tokens\n1,"multi\nline prompt",5\n2,ok,lots\n3,a,b,c\n')
    result = run(cli, data, store_path, "--on-bad-row", "skip")
    assert result.exit_code == 0, result.stderr
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [(r["line"], r["field"]) for r in rejects] == [(4, "max_tokens"), (5, "(line)")]
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["1"]


def test_parquet_rows_are_named_by_row(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"prompt": ["fine", None, "also fine"], "id": ["x", "y", "z"]}), data)
    result = run(cli, data, store_path)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert f"{data}:row 2: field 'prompt': missing" in only_line(result.stderr)


def test_not_a_parquet_file(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = tmp_path / "data.parquet"
    data.write_text("this is not parquet")
    result = run(cli, data, store_path)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "not a readable Parquet file" in only_line(result.stderr)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--budget", "lots"], "--budget must be a number of dollars"),
        (["--budget", "-1"], "--budget must be zero or more dollars"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--on-bad-row", "maybe"], "--on-bad-row must be fail or skip"),
        (["--provider", "nosuch"], "unknown provider 'nosuch'"),
        (["--model", "gpt-nonexistent"], "no price for model 'gpt-nonexistent'"),
    ],
)
def test_bad_options_are_configuration_errors(
    cli: Cli, tmp_path: Path, store_path: Path, args: list[str], needle: str
) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [GOOD])
    result = run(cli, data, store_path, *args)
    assert result.exit_code == ExitCode.USAGE
    assert needle in only_line(result.stderr)


def test_an_output_folder_that_does_not_exist_fails_before_any_call(
    cli: Cli, sim: object, tmp_path: Path, store_path: Path
) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [GOOD])
    result = cli(
        "run",
        data,
        "--base-url",
        sim.url,
        "--store",
        store_path,
        "--output",  # type: ignore[attr-defined]
        tmp_path / "missing" / "out.jsonl",
        "--quiet",
    )
    assert result.exit_code == ExitCode.USAGE
    assert "does not exist; nothing was sent" in only_line(result.stderr)
    assert sim.requests == 0  # type: ignore[attr-defined]


def test_missing_api_key_names_the_variable(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", [GOOD])
    result = run(cli, data, store_path, "--provider", "openai", env={"OPENAI_API_KEY": ""})
    assert result.exit_code == ExitCode.USAGE
    assert "set the environment variable OPENAI_API_KEY" in only_line(result.stderr)
