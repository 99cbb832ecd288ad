"""Row rules for the engine: `tov_formats`' formats and rules, raised as DataError.

Formats (detected from the first row; every row must then follow it): chat, prompt_completion,
text and token_classification (see `tov_formats.formats`). Extra columns are kept in the row dicts
and ignored by the engine.
"""

from __future__ import annotations

from typing import Any

from tov_engine.errors import DataError
from tov_formats import FORMATS, ROLES, Problem, Rule, detect_format, row_problems

__all__ = ["FORMATS", "ROLES", "check_row", "detect_format"]

# How the engine words each broken rule (the API words them its own way).
_REASONS = {
    Rule.NOT_STRING: "expected a string, got {found}",
    Rule.EMPTY: "empty text",
    Rule.NOT_LIST: "expected a non-empty list, got {found}",
    Rule.TOO_MANY: "{count} entries; at most {limit} are allowed",
    Rule.BAD_ROLE: "unknown role {found}",
    Rule.NO_ANSWER: "no non-empty assistant turn to train on",
    Rule.MIXED_TAGS: "tags must be all strings or all ints, got {found}",
    Rule.COUNT_MISMATCH: "{count} tags for {limit} tokens",
}


def _reason(problem: Problem, fmt: str) -> str:
    if problem.rule is Rule.NOT_OBJECT:
        what = "an object" if problem.field else "a JSON object"
        return f"expected {what}, got {problem.found}"
    if problem.rule is Rule.MISSING:
        nested = "[" in problem.field or "." in problem.field
        return "missing field" if nested else f"missing field (the file is in {fmt} format)"
    return _REASONS[problem.rule].format(
        found=problem.found, count=problem.count, limit=problem.limit
    )


def check_row(file: str, row: int, record: Any, fmt: str) -> None:
    """Raise DataError unless `record` is a valid example of format `fmt`.

    Args:
        file: path for messages. row: 1-based row number. record: the parsed row. fmt: the format.
    """
    problems = row_problems(record, fmt)
    if problems:
        first = problems[0]
        raise DataError(file, row, first.field, _reason(first, fmt))
