"""The cascade's checks, one by one: what escalates an answer and what is said about it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costinfer.errors import ConfigError
from costinfer.routing.checks import Acceptance, Answer


def _answer(text: str | None, finish: str = "stop") -> Answer:
    return Answer("k", text, finish, "gpt-4o-mini", {"messages": [{"role": "user", "content": "q"}]}, "r1", None)


def test_cut_and_refused_answers_escalate_without_a_check_of_the_users() -> None:
    verdicts = Acceptance().reasons(
        [
            _answer("fine"),
            _answer("half an ans", "length"),
            _answer("I'm sorry, but I can't help with that."),
            _answer("I cannot assist with this request."),
            _answer("", "content_filter"),
            _answer("I'm sorry to hear that; the refund takes 3 days."),  # not a refusal
        ]
    )
    assert verdicts == [
        None,
        "cut at max_tokens (finish_reason length)",
        "refused",
        "refused",
        "refused",
        None,
    ]


def test_regex_nonempty_and_json_schema(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps({"type": "object", "required": ["label"], "properties": {"label": {"enum": ["a", "b"]}}})
    )
    check = Acceptance(regex=r"label", nonempty=True, json_schema=schema)
    verdicts = check.reasons(
        [_answer('{"label": "a"}'), _answer("   "), _answer("no label here"), _answer('{"label": "c"}')]
    )
    assert verdicts[0] is None
    assert verdicts[1] == "empty answer (--accept-nonempty)"
    assert verdicts[2] == "not JSON (--accept-json-schema)"
    assert verdicts[3] is not None and verdicts[3].startswith("fails --accept-json-schema at label:")


def test_bad_checks_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular expression"):
        Acceptance(regex="(")
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": 12}')
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        Acceptance(json_schema=bad)
    with pytest.raises(ConfigError, match="cannot read it"):
        Acceptance(json_schema=tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="command not found"):
        Acceptance(cmd="no-such-command-anywhere").reasons([_answer("fine")])
