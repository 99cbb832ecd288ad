"""Per-row rules of the four formats: what makes a row valid, as a list of precise problems.

The rules say *what* is wrong and *where* (a `Problem`: field, rule, what was found); each caller
words it for its readers (the API's 422 errors, the engine's DataError).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tov_formats.formats import CHAT, PROMPT_COMPLETION, ROLES, TOKEN_CLASSIFICATION


class Rule(StrEnum):
    """Which rule a field broke."""

    NOT_OBJECT = "not_object"  # found: the JSON kind of the value
    MISSING = "missing"
    NOT_STRING = "not_string"  # found: the JSON kind of the value
    EMPTY = "empty"  # a string holding only whitespace
    NOT_LIST = "not_list"  # expected a non-empty list; found: the JSON kind of the value
    TOO_MANY = "too_many"  # count entries, more than limit
    BAD_ROLE = "bad_role"  # found: repr() of the role
    NO_ANSWER = "no_answer"  # no non-empty assistant turn
    MIXED_TAGS = "mixed_tags"  # found: the tags' kinds, sorted, comma-separated
    COUNT_MISMATCH = "count_mismatch"  # count tags for limit tokens


@dataclass(frozen=True)
class Problem:
    """One broken rule: `field` names it precisely (`messages[2].role`, `tokens[0]`)."""

    field: str
    rule: Rule
    found: str = ""
    count: int = 0
    limit: int = 0


@dataclass(frozen=True)
class RowLimits:
    """Resource limits on one row (None: unlimited)."""

    max_messages: int | None = None  # turns in a chat row
    max_tokens: int | None = None  # entries in a token_classification row


NO_LIMITS = RowLimits()
_JSON_KINDS = {dict: "object", list: "array", str: "string", bool: "boolean"}


def kind_of(value: Any) -> str:
    """The value's kind in JSON words (`object`, `array`, `string`, `null`, `NaN`, `int`, ...)."""
    if value is None:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def row_problems(row: Any, fmt: str, limits: RowLimits = NO_LIMITS) -> list[Problem]:
    """Everything wrong with one row of format `fmt` (empty when the row is valid).

    A chat or token_classification row yields at most one problem (the first found); a
    prompt_completion row one per field.
    """
    if not isinstance(row, dict):
        return [Problem("", Rule.NOT_OBJECT, kind_of(row))]
    if fmt == CHAT:
        return _listed(_chat_problem(row, limits.max_messages))
    if fmt == TOKEN_CLASSIFICATION:
        return _listed(_tagged_problem(row, limits.max_tokens))
    if fmt == PROMPT_COMPLETION:
        prompt = _field_problem(row, "prompt", allow_empty=True)
        return _listed(prompt) + _listed(_field_problem(row, "completion"))
    return _listed(_field_problem(row, "text"))


def _listed(problem: Problem | None) -> list[Problem]:
    return [] if problem is None else [problem]


def _text_problem(where: str, value: Any, *, allow_empty: bool = False) -> Problem | None:
    if not isinstance(value, str):
        return Problem(where, Rule.NOT_STRING, kind_of(value))
    if not allow_empty and not value.strip():
        return Problem(where, Rule.EMPTY)
    return None


def _field_problem(row: dict[str, Any], name: str, *, allow_empty: bool = False) -> Problem | None:
    if name not in row:
        return Problem(name, Rule.MISSING)
    return _text_problem(name, row[name], allow_empty=allow_empty)


def _list_problem(row: dict[str, Any], name: str, limit: int | None) -> Problem | None:
    """`name` must hold a non-empty list of at most `limit` entries."""
    if name not in row:
        return Problem(name, Rule.MISSING)
    value = row[name]
    if not isinstance(value, list) or not value:
        return Problem(name, Rule.NOT_LIST, kind_of(value))
    if limit is not None and len(value) > limit:
        return Problem(name, Rule.TOO_MANY, count=len(value), limit=limit)
    return None


def _chat_problem(row: dict[str, Any], max_messages: int | None) -> Problem | None:
    problem = _list_problem(row, "messages", max_messages)
    if problem:
        return problem
    messages = row["messages"]
    for i, message in enumerate(messages):
        problem = _message_problem(f"messages[{i}]", message)
        if problem:
            return problem
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return Problem("messages", Rule.NO_ANSWER)
    return None


def _message_problem(where: str, message: Any) -> Problem | None:
    if not isinstance(message, dict):
        return Problem(where, Rule.NOT_OBJECT, kind_of(message))
    if "role" not in message:
        return Problem(f"{where}.role", Rule.MISSING)
    if message["role"] not in ROLES:
        return Problem(f"{where}.role", Rule.BAD_ROLE, repr(message["role"]))
    if "content" not in message:
        return Problem(f"{where}.content", Rule.MISSING)
    return _text_problem(f"{where}.content", message["content"], allow_empty=True)


def _tagged_problem(row: dict[str, Any], max_tokens: int | None) -> Problem | None:
    problem = _list_problem(row, "tokens", None)
    if problem:
        return problem
    tokens: list[Any] = row["tokens"]
    for i, token in enumerate(tokens):
        problem = _text_problem(f"tokens[{i}]", token)
        if problem:
            return problem
    if max_tokens is not None and len(tokens) > max_tokens:
        return Problem("tokens", Rule.TOO_MANY, count=len(tokens), limit=max_tokens)
    if "tags" not in row:
        return Problem("tags", Rule.MISSING)
    tags = row["tags"]
    if not isinstance(tags, list):
        return Problem("tags", Rule.NOT_LIST, kind_of(tags))
    kinds = {kind_of(tag) for tag in tags}
    if not (kinds <= {"string"} or kinds <= {"int"}):
        return Problem("tags", Rule.MIXED_TAGS, ", ".join(sorted(kinds)))
    if len(tags) != len(tokens):
        return Problem("tags", Rule.COUNT_MISMATCH, count=len(tags), limit=len(tokens))
    return None
