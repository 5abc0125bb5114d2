"""Docs that cannot drift: docs/architecture.md names every module and only modules that exist, docs/store.md's
schema version, tables and migrations are the code's, and docs/cli.md is what the CLI generates."""

from __future__ import annotations

import re
from pathlib import Path

from costinfer.cli.reference import generate
from costinfer.store import Store
from costinfer.store.schema import MIGRATIONS, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _modules() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "costinfer").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }


def test_the_architecture_names_every_module_and_no_other() -> None:
    text = (DOCS / "architecture.md").read_text()
    named = set(re.findall(r"`(costinfer/[\w/]+\.py)`", text))
    assert not named - _modules(), f"docs/architecture.md names modules that do not exist: {sorted(named - _modules())}"
    assert not _modules() - named, f"docs/architecture.md does not name: {sorted(_modules() - named)}"


def test_the_store_doc_has_the_codes_schema_version_tables_and_migrations() -> None:
    text = (DOCS / "store.md").read_text()
    assert f"## Tables (schema version {SCHEMA_VERSION})" in text
    documented = set(re.findall(r"^\| `(\w+)` \|", text, re.M))
    with Store.memory() as store:
        tables = {str(r[0]) for r in store._con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert documented == tables, f"in the doc only: {documented - tables}; in the store only: {tables - documented}"
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", text, re.M)
    assert [(int(v), name) for v, name in rows] == [(v, name) for v, name, _ in MIGRATIONS]


def test_the_cli_reference_is_what_the_cli_generates() -> None:
    expected = generate()
    actual = (DOCS / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is out of date: run `python -m costinfer.cli.reference`"
    for option in re.findall(r"`(--[\w-]+)`", expected):  # every option of every command is in it (by construction)
        assert option in actual
