"""A provider from outside the package: a test distribution declares it in the ``costinfer.backends`` entry-point
group, and the main job runs through it, exactly as through a built-in one."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from tests.conftest import read_jsonl, sim_log, subprocess_cli, write_jsonl

PLUGIN = '''
"""A third party's provider: its own name and key variable, OpenAI's protocol with an answer prefix of its own."""
from typing import ClassVar

from costinfer.backends.base import Backend, Completion
from costinfer.backends.openai import parse_chat_completion


class EchoPlugin(Backend):
    name: ClassVar[str] = "echo-plugin"
    api_key_env: ClassVar[str | None] = "ECHO_PLUGIN_KEY"
    key_required: ClassVar[bool] = True

    def parse(self, raw: bytes) -> Completion:
        done = parse_chat_completion(raw)
        done.text = "echo-plugin: " + (done.text or "")
        return done
'''


def _distribution(root: Path) -> Path:
    """A minimal installed distribution on a path of its own: a module and its dist-info with the entry point."""
    root.mkdir()
    (root / "echo_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[costinfer.backends]\necho-plugin = echo_plugin:EchoPlugin\n")
    return root


def test_a_provider_registered_from_outside_runs_the_main_job(tmp_path: Path, sim: object) -> None:
    site = _distribution(tmp_path / "site")
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"plugin question {i}"} for i in range(12)])
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "ECHO_PLUGIN_KEY": "k"}
    args = ["run", data, "--provider", "echo-plugin", "--base-url", sim.url, "--store", tmp_path / "s.duckdb"]  # type: ignore[attr-defined]
    proc = subprocess_cli(*args, "-o", tmp_path / "o.jsonl", "--json", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["calls"] == 12 and summary["failed"] == 0
    rows = read_jsonl(tmp_path / "o.jsonl")
    assert all(r["provider"] == "echo-plugin" and r["response"].startswith("echo-plugin: ") for r in rows)
    assert len([e for e in sim_log(sim) if e["status"] == 200]) == 12  # type: ignore[arg-type]
    # its key variable is its own: without it, the run stops before anything is sent
    env.pop("ECHO_PLUGIN_KEY")
    proc = subprocess_cli(*args, "-o", tmp_path / "o2.jsonl", env=env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "ECHO_PLUGIN_KEY" in err
    # and it is listed among the known providers
    proc = subprocess_cli(*args[:2], "--provider", "nope", env=env)
    _, err = proc.communicate(timeout=120)
    assert "echo-plugin" in err
