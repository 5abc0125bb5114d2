"""docs/cli.md, generated from the Typer app itself: every command, its arguments and options, their defaults and
help, panel by panel. ``python -m costinfer.cli.reference`` rewrites the file; ``tests/test_docs.py`` fails when the
file differs from what the app would generate, so the reference cannot drift from ``--help``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from costinfer.cli.app import load_commands

TARGET = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
HEADER = """# Command reference

Generated from the CLI by `python -m costinfer.cli.reference`; `tests/test_docs.py` fails when it is out of date.
Every command also answers `--help`. Exit codes: see `costinfer --help`.
"""


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").replace("\b", "").split())


def _argument(param: Any) -> bool:
    return type(param).__name__.endswith("Argument")


def _default(param: Any) -> str:
    if param.required:
        return "required"
    default = param.default
    if getattr(param, "is_flag", False) and getattr(param, "secondary_opts", None):
        return str(param.opts[0] if default else param.secondary_opts[0])
    if default is None or default == [] or default is False:
        return ""
    return f"`{default}`"


def _names(param: Any) -> str:
    if _argument(param):
        return f"`{(param.metavar or param.name or '').upper()}`"
    names = [*param.opts, *getattr(param, "secondary_opts", [])]
    return ", ".join(f"`{n}`" for n in names)


def _command(path: str, command: Any, out: list[str]) -> None:
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                _command(f"{path} {name}", sub, out)
        return
    out.append(f"\n## `{path}`\n")
    doc = (command.help or "").split("\n\n")[0]
    out.append(_cell(doc) + "\n")
    rows: dict[str, list[str]] = {}
    library = path in ("costinfer run", "costinfer plan")  # also the keywords of costinfer.run_spec
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        panel = getattr(param, "rich_help_panel", None) or ("Arguments" if _argument(param) else "")
        help_text = _cell(getattr(param, "help", None) or "")
        keyword = f" `{param.name}` |" if library else ""
        rows.setdefault(panel or "Options", []).append(
            f"| {_names(param)} |{keyword} {_default(param)} | {help_text} |"
        )
    for panel, lines in rows.items():
        head = (
            "| option | `run_spec` keyword | default | what it does |\n|---|---|---|---|"
            if library
            else ("| option | default | what it does |\n|---|---|---|")
        )
        out.append(f"\n**{panel}**\n\n{head}")
        out.extend(lines)


def generate() -> str:
    root = typer.main.get_command(load_commands())
    out = [HEADER]
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        _command(f"costinfer {name}", command, out)
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    text = generate()
    if "--check" in sys.argv[1:]:
        return 0 if TARGET.exists() and TARGET.read_text() == text else 1
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
