"""Whether an answer is good enough, or the row goes to the next model of a cascade (``--route cascade``).

Two checks always apply: an answer cut at ``max_tokens`` (finish reason ``length``) and a refusal (finish reason
``content_filter`` or ``refusal``, or an answer that opens with a refusal such as "I'm sorry, but I can't"; "I'm sorry
to hear that" is no refusal). The
user adds their own: ``--accept-regex`` (the answer must contain a match), ``--accept-json-schema FILE`` (the answer
must be JSON valid against the schema), ``--accept-nonempty``, and ``--accept-cmd`` (a command that reads the row and
the answer as one JSON object on standard input; exit 0 accepts, anything else escalates, its first line of
standard error is kept as the reason).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from costinfer.core.errors import ConfigError

_REFUSAL = re.compile(
    r"^\s*(?:(?:I'm |I am )?sorry,? (?:but )?I (?:can(?:no|')t|won't|will not|am unable|'m unable|am not able)"
    r"|I apologi[sz]e, but I (?:can(?:no|')t|won't)"
    r"|I can(?:no|')t (?:help|assist|comply|provide|answer)"
    r"|I(?:'m| am) (?:not able|unable) to (?:help|assist|comply|provide|answer))",
    re.IGNORECASE,
)
CMD_TIMEOUT_S = 60.0


@dataclass
class Answer:
    key: str
    text: str | None
    finish_reason: str | None
    model: str
    request: dict[str, Any]
    row_id: str | None = None
    metadata: Any = None


@dataclass
class Acceptance:
    regex: str | None = None
    json_schema: Path | None = None
    nonempty: bool = False
    cmd: str | None = None
    _pattern: re.Pattern[str] | None = field(init=False, default=None, repr=False)
    _validator: Any = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.regex is not None:
            try:
                self._pattern = re.compile(self.regex)
            except re.error as exc:
                raise ConfigError(f"--accept-regex {self.regex!r}: not a regular expression: {exc}") from exc
        if self.json_schema is not None:
            self._validator = _load_schema(self.json_schema)
        if self.cmd is not None and not shlex.split(self.cmd):
            raise ConfigError("--accept-cmd is empty: give a command such as 'python check.py'")

    def describe(self) -> str:
        parts = ["finish_reason length", "refusals"]
        if self.regex is not None:
            parts.append(f"--accept-regex {self.regex!r}")
        if self.json_schema is not None:
            parts.append(f"--accept-json-schema {self.json_schema}")
        if self.nonempty:
            parts.append("--accept-nonempty")
        if self.cmd is not None:
            parts.append(f"--accept-cmd {self.cmd!r}")
        return ", ".join(parts)

    def reasons(self, answers: Iterable[Answer]) -> list[str | None]:
        """For each answer: None to accept it, else why it is escalated. The user's command runs for the answers
        the other checks accept, several at a time."""
        answers = list(answers)
        out = [self._inline(a) for a in answers]
        if self.cmd is not None:
            todo = [i for i, why in enumerate(out) if why is None]
            with ThreadPoolExecutor(max_workers=8) as pool:
                for i, why in zip(todo, pool.map(self._command, [answers[i] for i in todo]), strict=True):
                    out[i] = why
        return out

    def _inline(self, a: Answer) -> str | None:
        text = a.text or ""
        if a.finish_reason == "length":
            return "cut at max_tokens (finish_reason length)"
        if a.finish_reason in ("content_filter", "refusal") or _REFUSAL.match(text):
            return "refused"
        if self.nonempty and not text.strip():
            return "empty answer (--accept-nonempty)"
        if self._pattern is not None and self._pattern.search(text) is None:
            return "no match for --accept-regex"
        if self._validator is not None:
            try:
                value = json.loads(text)
            except ValueError:
                return "not JSON (--accept-json-schema)"
            error = next(iter(self._validator.iter_errors(value)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "the answer"
                return f"fails --accept-json-schema at {where}: {error.message}"[:200]
        return None

    def _command(self, a: Answer) -> str | None:
        assert self.cmd is not None
        payload = orjson.dumps(
            {
                "id": a.row_id,
                "request": a.request,
                "answer": a.text,
                "model": a.model,
                "finish_reason": a.finish_reason,
                "metadata": orjson.loads(a.metadata) if isinstance(a.metadata, str) else a.metadata,
            }
        )
        try:
            done = subprocess.run(
                shlex.split(self.cmd), input=payload, capture_output=True, timeout=CMD_TIMEOUT_S, check=False
            )
        except FileNotFoundError as exc:
            raise ConfigError(f"--accept-cmd {self.cmd!r}: command not found: {exc.filename}") from exc
        except subprocess.TimeoutExpired:
            return f"--accept-cmd took more than {CMD_TIMEOUT_S:.0f} s"
        if done.returncode == 0:
            return None
        first = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = f": {first[0][:160]}" if first else ""
        return f"--accept-cmd exited {done.returncode}{why}"


def _load_schema(path: Path) -> Any:
    import jsonschema

    try:
        schema = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"--accept-json-schema {path}: cannot read it: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"--accept-json-schema {path}: not JSON: {exc}") from exc
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"--accept-json-schema {path}: not a valid JSON Schema: {exc.message}") from exc
    return cls(schema)
