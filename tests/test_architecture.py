"""The structure the code keeps (docs/architecture.md): the store owns its SQL, modules stay small, imports run one
way, and the core knows providers only through their base interface and the entry-point group."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "costinfer"
# the pipeline's stages, in the order a run goes through them, and the modules they share at the package root
STAGES = ("reading", "reuse", "routing", "pricing", "planning", "execution", "engines", "accounting", "pipeline")
CORE = (*(f"costinfer.{s}" for s in STAGES), "costinfer.errors", "costinfer.progress")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    """The costinfer modules a file imports at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("costinfer"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("costinfer"))
    return found


def test_no_module_outside_the_store_touches_a_duckdb_connection() -> None:
    pattern = re.compile(r"^\s*(import|from) duckdb\b|\bduckdb\.\w|\.con\b|\._con\b")
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for name, path in _modules().items()
        if not name.startswith("costinfer.store")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, "\n".join(offenders)


def test_no_module_is_over_400_lines() -> None:
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in _modules().values()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not big, big


def test_the_imports_have_no_circle() -> None:
    modules = _modules()
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    # a package's __init__ re-exporting its own modules is not a circle between modules
    graph = {
        n: {m for m in deps if not (n == m.rsplit(".", 1)[0] or m == n.rsplit(".", 1)[0])} for n, deps in graph.items()
    }
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if seen.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            if dep not in seen:
                visit(dep)
        stack.pop()
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name)


def test_the_core_knows_providers_only_through_their_base_interface() -> None:
    # replicas: several servers of any one provider behind its base interface, nothing provider-specific
    allowed = {
        f"costinfer.backends.{m}"
        for m in ("base", "completion", "transport", "replicas", "urls", "prompt_cache", "batch_api")
    }
    offenders = {
        name: sorted(
            m
            for m in _imports(path)
            if (m.startswith("costinfer.backends") and m not in allowed) or m.startswith("costinfer.simulator")
        )
        for name, path in _modules().items()
        if name.startswith((*CORE, "costinfer.store"))
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_the_core_never_imports_typer_or_rich() -> None:
    offenders = [
        name
        for name, path in _modules().items()
        if name.startswith((*CORE, "costinfer.store", "costinfer.backends"))
        and re.search(r"^\s*(from|import) (typer|rich)\b", path.read_text(), re.M)
    ]
    assert not offenders, offenders


def test_no_stage_branches_on_a_providers_name() -> None:
    """What a provider is (its prompt cache, batch API, model families, whether --ray-serve can start it) is declared
    on its class; a stage asks the class. The catalog's own field ``litellm_provider`` is data, not a branch."""
    pattern = re.compile(r"""(==|!=)\s*["'](openai|anthropic|vllm|simulate)["']|in \(["'](openai|anthropic|vllm)""")
    offenders = [
        f"{name}:{n}: {line.strip()}"
        for name, path in _modules().items()
        if name.startswith(CORE)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and "litellm_provider" not in line
    ]
    assert not offenders, "\n".join(offenders)
