"""What a spec cannot check by itself: the machine. The dataset can be read, every file the run writes can be
written and destroys no other (the input, the store, each other), Ray is there when asked for. Checked before
anything is read or sent, each failure one line naming the option and the fix."""

from __future__ import annotations

import os
from pathlib import Path

from costinfer.backends.base import Backend
from costinfer.errors import ConfigError
from costinfer.reading.source import check_file, is_stdin
from costinfer.spec import RunSpec
from costinfer.store import default_store_path


def check(spec: RunSpec, backend_cls: type[Backend]) -> None:
    """``backend_cls``: the provider the run calls (``--provider``, or the model's)."""
    if spec.ray.serve is not None and not backend_cls.ray_servable:
        raise ConfigError("--ray-serve starts OpenAI-compatible servers: pass --provider vllm (or openai)")
    if spec.ray.serve is not None or (spec.ray.engine == "ray" and spec.reuse.semantic):
        from costinfer.engines.ray_embed import missing_ray

        if (why := missing_ray(spec.ray.address)) is not None:
            raise ConfigError(why)
    check_file(spec.input.path)
    for flag, path in (("--output", spec.output.results), ("--rejects", spec.output.rejects), *_metrics(spec)):
        folder = path.parent
        if not folder.is_dir():
            raise ConfigError(f"{flag} {path}: the folder {folder} does not exist; nothing was sent")
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"{flag} {path}: the folder {folder} is not writable; nothing was sent")
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a folder; name a file")
    _check_distinct(spec)


def _metrics(spec: RunSpec) -> list[tuple[str, Path]]:
    return [("--metrics-file", spec.output.metrics_file)] if spec.output.metrics_file is not None else []


def written_paths(spec: RunSpec) -> list[tuple[str, Path]]:
    """Every file a run writes, with the option that names it: results, rejects, the report (JSON and HTML, beside
    the results), the metrics file, the semantic audit."""
    out = spec.output
    named = [("--output", out.results), ("--rejects", out.rejects)]
    if out.report:
        named += [
            ("the report (beside --output)", out.beside("report.json")),
            ("the HTML report (beside --output)", out.beside("report.html")),
        ]
    named += _metrics(spec)
    if spec.reuse.audit:
        named.append(("--semantic-audit's file (beside --output)", out.audit))
    return named


def _check_distinct(spec: RunSpec) -> None:
    """The input, the store and every file a run writes are different files: writing one must never destroy another
    (``-o data.jsonl`` once overwrote the dataset with its results; ``--metrics-file`` the dataset or the store; a
    dataset named ``x.report.json`` its own report). Symbolic links and relative paths are resolved."""
    named = written_paths(spec)
    store = spec.store.path or default_store_path()
    if isinstance(store, Path):  # a shared store (a postgresql:// URL) is no file here
        named.append(("--store", store))
    if not is_stdin(spec.input.path):
        named.insert(0, ("the input", spec.input.path))
    for i, (flag_a, a) in enumerate(named):
        for flag_b, b in named[i + 1 :]:
            if _same_file(a, b):
                raise ConfigError(
                    f"{flag_b} {b} is the same file as {flag_a}{'' if flag_a == 'the input' else ' ' + str(a)}: "
                    f"writing it would destroy the other; choose another path. Nothing was read or sent"
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.expanduser().resolve() == b.expanduser().resolve()
    except OSError:
        return False
