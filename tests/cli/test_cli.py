"""The CLI's surface: help for every command, exit codes documented, README kept true."""

from __future__ import annotations

import re
from typing import Any

import typer.main

from tests.conftest import ROOT, Cli, app


def all_commands() -> list[tuple[str, Any]]:
    root = typer.main.get_command(app)
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, cmd: Any) -> None:
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            out.append((prefix, cmd))

    walk("", root)
    return out


def test_every_command_has_help_and_is_in_the_readme(cli: Cli) -> None:
    readme = (ROOT / "README.md").read_text()
    commands = all_commands()
    assert {name for name, _ in commands} >= {
        "run",
        "plan",
        "prices list",
        "prices show",
        "prices update",
        "simulate serve",
    }
    for name, cmd in commands:
        assert cmd.help, name
        result = cli(*name.split(), "--help")
        assert result.exit_code == 0
        assert f"costinfer {name}" in readme, f"`costinfer {name}` is not documented in the README"


def test_exit_codes_are_in_help_and_readme(cli: Cli) -> None:
    from costinfer.errors import ExitCode

    text = cli("--help").stdout
    readme = (ROOT / "README.md").read_text()
    for code in ExitCode:
        assert re.search(rf"\b{int(code)}\s", text), code
        assert f"| {int(code)} |" in readme


def test_the_readme_starts_with_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = "./scripts/setup.sh && ./scripts/test.sh"
    assert test_line in readme and test_line in ci
    assert "./scripts/setup.sh && .venv/bin/costinfer run sample_data/prompts.jsonl" in readme


def test_the_store_never_draws_duckdbs_progress_bar(tmp_path: object) -> None:
    from pathlib import Path

    from costinfer.store import Store

    with Store.open(Path(str(tmp_path)) / "s.duckdb") as store:
        assert store._con.execute("SELECT current_setting('enable_progress_bar')").fetchone() == (False,)
