"""Whether an answer is good enough, or the row goes to the next model of a cascade (``--route cascade``).

Two checks always apply: an answer cut at ``max_tokens`` (finish reason ``length``) and a refusal (finish reason
``content_filter`` or ``refusal``, or an answer that opens with a refusal such as "I'm sorry, but I can't"; "I'm sorry
to hear that" is no refusal). The
user adds their own: ``--accept-regex`` (the answer must contain a match), ``--accept-json-schema FILE`` (the answer
must be JSON valid against the schema), ``--accept-nonempty``, and ``--accept-cmd`` (a command that reads the row and
the answer as one JSON object on standard input; exit 0 accepts, exit 1 escalates, its first line of standard error
is kept as the reason).

A check that cannot run is not a verdict: a missing program is refused before anything is read or sent; a command
that crashes (killed by a signal, a Python traceback, any exit other than 0 and 1, a time-out) stops the run after at
most one round of ``PROBE`` answers, before it escalates anything on its word; and a command that rejects every one
of its first round (at least ``PROBE // 2`` answers the other checks accepted) stops it too (``CheckError``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from costinfer.errors import ConfigError

_REFUSAL = re.compile(
    r"^\s*(?:(?:I'm |I am )?sorry,? (?:but )?I (?:can(?:no|')t|won't|will not|am unable|'m unable|am not able)"
    r"|I apologi[sz]e, but I (?:can(?:no|')t|won't)"
    r"|I can(?:no|')t (?:help|assist|comply|provide|answer)"
    r"|I(?:'m| am) (?:not able|unable) to (?:help|assist|comply|provide|answer))",
    re.IGNORECASE,
)
CMD_TIMEOUT_S = 60.0
CHECKS_VERSION = "1"  # the built-in checks (cut answers, refusals): a change of them starts a router's history anew
PROBE = 16  # the first round of --accept-cmd: answers checked before any escalation rests on its word
MAX_CHECK_FAILURES = 3  # after the first round: crashes of the command that stop the run


class CheckError(ConfigError):
    """--accept-cmd cannot be trusted to decide: it is missing, it crashes, or it rejects every answer."""


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
    _argv: list[str] = field(init=False, default_factory=list, repr=False)
    _ran = 0  # answers the command has judged
    _passed = 0  # ... and accepted
    _failures = 0  # times the command itself failed

    def __post_init__(self) -> None:
        if self.regex is not None:
            try:
                self._pattern = re.compile(self.regex)
            except re.error as exc:
                raise ConfigError(f"--accept-regex {self.regex!r}: not a regular expression: {exc}") from exc
        if self.json_schema is not None:
            self._validator = _load_schema(self.json_schema)
        if self.cmd is not None:
            self._argv = _resolve_command(self.cmd)

    def fingerprint(self) -> str:
        """What identifies these checks (the schema by its content): a learned router learns only from answers
        that the same checks judged."""
        schema = self.json_schema.read_bytes() if self.json_schema is not None else b""
        parts = [CHECKS_VERSION, self.regex or "", hashlib.sha256(schema).hexdigest(), str(self.nonempty), self.cmd]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def reasons(self, answers: Iterable[Answer]) -> list[str | None]:
        """For each answer: None to accept it, else why it is escalated. The user's command runs for the answers
        the other checks accept, several at a time."""
        answers = list(answers)
        out = [self._inline(a) for a in answers]
        if self.cmd is not None:
            todo = [i for i, why in enumerate(out) if why is None]
            while todo:  # the first PROBE answers alone, so that a broken command is found before it decides more
                step = todo[: PROBE if self._ran < PROBE else len(todo)]
                todo = todo[len(step) :]
                with ThreadPoolExecutor(max_workers=8) as pool:
                    verdicts = list(pool.map(self._command, [answers[i] for i in step]))
                self._judge(verdicts)
                for i, (_, why) in zip(step, verdicts, strict=True):
                    out[i] = why
        return out

    def _judge(self, verdicts: list[tuple[str | None, str | None]]) -> None:
        """Stop (``CheckError``) when the command itself failed, or rejected every answer of its first round."""
        failed = [f for f, _ in verdicts if f is not None]
        first_round = self._ran == 0
        self._failures += len(failed)
        self._ran += len(verdicts) - len(failed)
        self._passed += sum(1 for f, why in verdicts if f is None and why is None)
        if failed and (first_round or self._failures >= MAX_CHECK_FAILURES):
            raise CheckError(
                f"--accept-cmd {self.cmd!r} failed to run ({len(failed)} of {len(verdicts)} answers): {failed[0]}; "
                f'nothing was escalated on its word. Try it by hand: echo \'{{"answer": "x"}}\' | {self.cmd}'
            )
        if first_round and self._ran >= PROBE // 2 and not self._passed:
            raise CheckError(
                f"--accept-cmd {self.cmd!r} rejected all of the first {self._ran} answers that every other check "
                f"accepted; that looks like a broken check (exit 1 escalates, exit 0 accepts), and nothing was "
                f"escalated. If the cheaper model really fails every row, drop it from --models"
            )

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

    def _command(self, a: Answer) -> tuple[str | None, str | None]:
        """(why the command failed to run, or None; why it rejects the answer, or None to accept)."""
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
            done = subprocess.run(self._argv, input=payload, capture_output=True, timeout=CMD_TIMEOUT_S, check=False)
        except OSError as exc:
            return f"cannot start it: {exc.strerror or exc}", None
        except subprocess.TimeoutExpired:
            return f"it took more than {CMD_TIMEOUT_S:.0f} s", None
        stderr = done.stderr.decode("utf-8", "replace").strip()
        lines = stderr.splitlines()
        if done.returncode < 0:
            return f"killed by signal {-done.returncode}", None
        if done.returncode not in (0, 1) or stderr.startswith("Traceback (most recent call last)"):
            last = lines[-1][:160] if lines else "no message"
            return f"exit {done.returncode}: {last}", None
        if done.returncode == 0:
            return None, None
        why = f": {lines[0][:160]}" if lines else ""
        return None, f"--accept-cmd exited {done.returncode}{why}"


def _resolve_command(cmd: str) -> list[str]:
    """The command's argv with its program found now, so that a missing one stops the run before any call."""
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise CheckError(f"--accept-cmd {cmd!r}: cannot be parsed: {exc}") from exc
    if not argv:
        raise CheckError("--accept-cmd is empty: give a command such as 'python check.py'")
    program = argv[0]
    found = shutil.which(program)
    if found is None:
        where = "command not found" if os.sep in program else "command not found on PATH"
        if os.sep in program and os.path.exists(program):
            where = "not executable (chmod +x it, or name its interpreter: 'python check.py')"
        raise CheckError(f"--accept-cmd {cmd!r}: {program}: {where}; nothing was read or sent")
    return [found, *argv[1:]]


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
