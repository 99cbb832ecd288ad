"""The row checker: `tov_formats`' rules over every row, worded for the API, under row limits.

It accumulates the row count, the format (from the first row), the columns and up to
MAX_REPORTED_ERRORS problems. The API shows the token_classification format as "tokens" (stored
in the database and returned as a dataset's `row_format`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.datasets.validation.report import (
    MAX_REPORTED_ERRORS,
    DatasetInvalid,
    DatasetSummary,
    file_sha256,
    problem_at,
)
from tov_formats import ROLES, TOKEN_CLASSIFICATION, Problem, RowLimits, Rule, row_problems
from tov_formats import detect_format as detect_row_format

__all__ = ["MAX_COLUMNS", "RowChecker", "api_format_name", "api_wording", "detect_row_format"]

MAX_COLUMNS = 1000  # distinct top-level keys / columns in a file
# Limits on the shape of one row (the byte limits come from Settings).
ROW_LIMITS = RowLimits(max_messages=10_000, max_tokens=100_000)
_API_FORMAT_NAMES = {TOKEN_CLASSIFICATION: "tokens"}

# What a field must hold, as the API says it when a rule about its value is broken.
_MUST_BE = {
    "text": "must be a non-empty string",
    "completion": "must be a non-empty string",
    "prompt": "must be a string",
    "messages": "must be a non-empty list of {role, content} objects",
    "role": f"must be one of {sorted(ROLES)}",
    "content": "must be a string",
    "tokens": "must be a non-empty list of non-empty strings",
    "tags": "must be a list of strings or integers",
}


def api_format_name(fmt: str) -> str:
    """A row format as users see it (`tokens` for token_classification)."""
    return _API_FORMAT_NAMES.get(fmt, fmt)


def api_wording(problem: Problem) -> tuple[str, str]:
    """(field, reason) of a problem as the API reports it."""
    column = problem.field.split("[", 1)[0]  # tokens[3] -> tokens
    if problem.rule is Rule.NOT_OBJECT:
        if not problem.field:
            return "", f"expected a JSON object, got {problem.found}"
        return problem.field, "must be an object with 'role' and 'content'"
    if problem.rule is Rule.TOO_MANY:
        unit = "turns" if column == "messages" else "entries"
        return column, f"has {problem.count} {unit}; at most {problem.limit} are allowed"
    if problem.rule is Rule.NO_ANSWER:
        return column, "needs at least one non-empty assistant turn (the loss is on it)"
    if problem.rule is Rule.MIXED_TAGS:
        return column, "must be all strings or all integers"
    if problem.rule is Rule.COUNT_MISMATCH:
        return column, f"has {problem.count} entries for {problem.limit} tokens"
    if column == "tokens":  # a bad token: the whole list is named
        return column, _MUST_BE[column]
    return problem.field, _MUST_BE[problem.field.rsplit(".", 1)[-1]]


class RowChecker:
    """Checks rows one by one; `unit` names where an error is: "line" (JSONL) or "row"."""

    def __init__(self, name: str, max_rows: int, unit: str = "line") -> None:
        self.name = name
        self.max_rows = max_rows
        self.unit = unit
        self.rows = 0
        self.row_format: str | None = None  # a tov_formats name
        self.columns: dict[str, None] = {}
        self.errors: list[dict[str, Any]] = []

    def error(self, number: int, field_name: str, reason: str, **extra: Any) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(
                {**problem_at(self.name, self.unit, number, field_name, reason), **extra}
            )

    def fail(self, number: int, field_name: str, reason: str, **extra: Any) -> DatasetInvalid:
        """A problem that stops the check: the errors so far plus this one."""
        self.error(number, field_name, reason, **extra)
        return DatasetInvalid(self._summary(), self.errors)

    def count_row(self, number: int) -> None:
        self.rows += 1
        if self.rows > self.max_rows:
            raise self.fail(number, "", f"more than {self.max_rows} rows (the row limit)")

    def check(self, number: int, row: Any, **extra: Any) -> None:
        """Count and check one parsed row; its format is the first row's."""
        self.count_row(number)
        if isinstance(row, dict) and self.row_format is None:
            self.row_format = detect_row_format(row)
            if self.row_format is None:
                self.error(
                    number,
                    "",
                    "unknown row format: expected 'messages', 'prompt'/"
                    "'completion', 'text' or 'tokens'/'tags'",
                    **extra,
                )
                return
        if isinstance(row, dict):
            self._add_columns(number, row)
        self.check_fields(number, row, self.row_format or "text", **extra)

    def check_fields(self, number: int, row: Any, row_format: str, **extra: Any) -> None:
        """Report every problem of one row of `row_format` (a tov_formats name)."""
        for problem in row_problems(row, row_format, ROW_LIMITS):
            self.error(number, *api_wording(problem), **extra)

    def _add_columns(self, number: int, row: dict[str, Any]) -> None:
        for name in row:
            if name not in self.columns:
                if len(self.columns) >= MAX_COLUMNS:
                    raise self.fail(number, "", f"more than {MAX_COLUMNS} distinct columns")
                self.columns[name] = None

    def _summary(self) -> str:
        first = self.errors[0]
        where = f"{self.unit} {first[self.unit]}" if first[self.unit] else "the file"
        what = f", field '{first['field']}'" if first["field"] else ""
        return (
            f"{self.name}: {len(self.errors)} problem(s); first at {where}{what}: {first['reason']}"
        )

    def finish(self, path: Path, file_format: str) -> DatasetSummary:
        """The summary of a file whose rows all passed; DatasetInvalid otherwise."""
        if self.rows == 0 and not self.errors:
            self.error(0, "", "the dataset has no rows")
        if self.errors:
            raise DatasetInvalid(self._summary(), self.errors)
        assert self.row_format is not None
        return DatasetSummary(
            api_format_name(self.row_format),
            self.rows,
            file_sha256(path),
            path.stat().st_size,
            list(self.columns),
            file_format,
        )
