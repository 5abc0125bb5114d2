"""The value that flows through the pipeline: one dataset row turned into one chat request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Request:
    """One good row of the dataset.

    ``row_idx`` is the row's 0-based position among the dataset's rows; ``line`` is where a user finds it (the 1-based
    line of a JSONL or CSV file, the 1-based row of a Parquet file). ``body`` is the provider-neutral chat request
    (OpenAI's chat-completions shape: ``model``, ``messages``, sampling parameters); backends translate it.
    """

    row_idx: int
    line: int
    row_id: str
    body: dict[str, Any]
    metadata: dict[str, Any] | None = None
    key: str = ""
    input_tokens: int = 0
    input_bound: int = 0
    priority: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    norm_key: str = ""  # the normalized tier's key
    group_key: str | None = None  # the semantic tier's group; None when the request does not end with a user text
    id_default: bool = False  # the row has no id: its position is its identity

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def max_tokens(self) -> int:
        return int(self.body["max_tokens"])


@dataclass(slots=True)
class Reject:
    """One bad row, kept with the reason it was rejected: rows in = result rows + rejects."""

    row_idx: int
    line: int
    field: str
    reason: str
    row_id: str | None = None
    id_default: bool = False  # the row has no id: its position is its identity

    def message(self, path: str, row_kind: str = "line") -> str:
        return f"{path}:{row_kind} {self.line}: field '{self.field}': {self.reason}"
