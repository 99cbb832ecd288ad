"""Checks a dataset file row by row before any job may use it.

Every problem is reported with its line (1-based), the field and the reason, so a user can fix the
file. The four row formats are those the engine accepts (ARCHITECTURE.md, "Dataset formats").
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_REPORTED_ERRORS = 20
ROW_FORMATS = ("chat", "prompt_completion", "text", "tokens")
ROLES = {"system", "user", "assistant", "tool"}


class DatasetInvalid(Exception):
    """The file cannot be used; `errors` holds up to MAX_REPORTED_ERRORS precise problems."""

    def __init__(self, summary: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(summary)
        self.errors = errors


@dataclass
class DatasetSummary:
    row_format: str
    rows: int
    sha256: str
    size_bytes: int
    columns: list[str] = field(default_factory=list)


def detect_row_format(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        return "chat"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    if "tokens" in row or "tags" in row:
        return "tokens"
    if "text" in row:
        return "text"
    return None


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def row_problems(row: Any, row_format: str) -> list[tuple[str, str]]:
    """(field, reason) pairs for everything wrong with one row of `row_format`."""
    if not isinstance(row, dict):
        return [("", f"expected a JSON object, got {type(row).__name__}")]
    if row_format == "text":
        return [] if _nonempty_str(row.get("text")) else [("text", "must be a non-empty string")]
    if row_format == "prompt_completion":
        problems = []
        if not isinstance(row.get("prompt"), str):
            problems.append(("prompt", "must be a string"))
        if not _nonempty_str(row.get("completion")):
            problems.append(("completion", "must be a non-empty string"))
        return problems
    if row_format == "chat":
        return _chat_problems(row.get("messages"))
    return _token_problems(row)


def _chat_problems(messages: Any) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        return [("messages", "must be a non-empty list of {role, content} objects")]
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return [(where, "must be an object with 'role' and 'content'")]
        if message.get("role") not in ROLES:
            return [(f"{where}.role", f"must be one of {sorted(ROLES)}")]
        if not isinstance(message.get("content"), str):
            return [(f"{where}.content", "must be a string")]
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return [("messages", "needs at least one non-empty assistant turn (the loss is on it)")]
    return []


def _token_problems(row: dict[str, Any]) -> list[tuple[str, str]]:
    tokens, tags = row.get("tokens"), row.get("tags")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        return [("tokens", "must be a non-empty list of strings")]
    if not isinstance(tags, list) or not all(
        isinstance(t, str) or (isinstance(t, int) and not isinstance(t, bool)) for t in tags
    ):
        return [("tags", "must be a list of strings or integers")]
    if len(tags) != len(tokens):
        return [("tags", f"has {len(tags)} entries for {len(tokens)} tokens")]
    return []


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def parse_json_line(raw: bytes) -> Any:
    """Parse one JSONL line; NaN and Infinity are refused (they poison training and scores)."""
    text = raw.decode("utf-8")
    value = json.loads(text, parse_constant=_reject_constant)
    return value


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


class RowChecker:
    """Accumulates the row count, the format and up to MAX_REPORTED_ERRORS problems."""

    def __init__(self, name: str, max_rows: int) -> None:
        self.name = name
        self.max_rows = max_rows
        self.rows = 0
        self.row_format: str | None = None
        self.columns: dict[str, None] = {}
        self.errors: list[dict[str, Any]] = []

    def error(self, line: int, field_name: str, reason: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(
                {"file": self.name, "line": line, "field": field_name, "reason": reason}
            )

    def check(self, line: int, row: Any) -> None:
        self.rows += 1
        if self.rows > self.max_rows:
            raise DatasetInvalid(
                f"{self.name}: more than {self.max_rows} rows",
                [{"file": self.name, "line": line, "field": "", "reason": "row limit exceeded"}],
            )
        if isinstance(row, dict) and self.row_format is None:
            self.row_format = detect_row_format(row)
            if self.row_format is None:
                self.error(
                    line,
                    "",
                    "unknown row format: expected 'messages', 'prompt'/"
                    "'completion', 'text' or 'tokens'/'tags'",
                )
                return
            self.columns = dict.fromkeys(row)
        for name in row if isinstance(row, dict) else ():
            self.columns.setdefault(name)
        for field_name, reason in row_problems(row, self.row_format or "text"):
            self.error(line, field_name, reason)

    def finish(self, sha256: str, size_bytes: int) -> DatasetSummary:
        if self.rows == 0:
            self.error(0, "", "the dataset has no rows")
        if self.errors:
            first = self.errors[0]
            summary = (
                f"{self.name}: {len(self.errors)} problem(s); first at line "
                f"{first['line']}, field '{first['field']}': {first['reason']}"
            )
            raise DatasetInvalid(summary, self.errors)
        assert self.row_format is not None
        return DatasetSummary(self.row_format, self.rows, sha256, size_bytes, list(self.columns))


def iter_jsonl(path: Path, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line) without reading more than `max_line_bytes` per line."""
    with path.open("rb") as handle:
        number = 0
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                yield number, b""  # sentinel: too long; skip the rest of the line
                while raw and not raw.endswith(b"\n"):
                    raw = handle.readline(max_line_bytes + 1)
                continue
            yield number, raw


def check_jsonl(path: Path, *, name: str, max_rows: int, max_line_bytes: int) -> DatasetSummary:
    """Validate a JSONL dataset; raises DatasetInvalid listing the problems."""
    checker = RowChecker(name, max_rows)
    digest = hashlib.sha256()
    blank_at = 0  # blank lines are allowed only at the end: a row's index is its line's index
    for number, raw in iter_jsonl(path, max_line_bytes):
        digest.update(raw)
        if raw.strip() and blank_at:
            checker.error(blank_at, "", "empty line inside the file")
            blank_at = 0
        if raw == b"":
            checker.rows += 1
            checker.error(number, "", f"line longer than {max_line_bytes} bytes")
            continue
        if not raw.strip():
            blank_at = blank_at or number
            continue
        try:
            row = parse_json_line(raw)
        except UnicodeDecodeError as exc:
            checker.rows += 1
            checker.error(number, "", f"invalid UTF-8 at byte {exc.start}")
            continue
        except ValueError as exc:
            checker.rows += 1
            checker.error(number, "", f"malformed JSON: {exc}")
            continue
        if _has_non_finite(row):
            checker.rows += 1
            checker.error(number, "", "NaN or Infinity is not allowed")
            continue
        checker.check(number, row)
    return checker.finish(digest.hexdigest(), path.stat().st_size)
