"""tov_formats: the row formats' detection and rules, shared by the API and the engine."""

from __future__ import annotations

from typing import Any

import pytest

from tov_formats import NO_LIMITS, Problem, RowLimits, Rule, detect_format, kind_of, row_problems

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


@pytest.mark.parametrize(
    "fields,fmt",
    [
        (CHAT, "chat"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"prompt": "p"}, "prompt_completion"),  # a half row is reported against its format
        ({"tags": [0]}, "token_classification"),
        ({"tokens": ["a"], "tags": ["O"], "prompt": "p"}, "token_classification"),  # complete wins
        ({"text": "t", "completion": "c"}, "text"),
        ({"text": "t", "tags": ["news"]}, "text"),
        ({"id": 1}, None),
        (["prompt", "completion"], "prompt_completion"),  # a file's columns
    ],
)
def test_detect_format(fields: Any, fmt: str | None) -> None:
    assert detect_format(fields) == fmt


@pytest.mark.parametrize(
    "row,fmt,problem",
    [
        ([1], "text", Problem("", Rule.NOT_OBJECT, "array")),
        ({"text": " "}, "text", Problem("text", Rule.EMPTY)),
        ({"text": float("nan")}, "text", Problem("text", Rule.NOT_STRING, "NaN")),
        ({"prompt": ""}, "prompt_completion", Problem("completion", Rule.MISSING)),
        ({"messages": []}, "chat", Problem("messages", Rule.NOT_LIST, "array")),
        (
            {"messages": [{"role": "bot", "content": "x"}]},
            "chat",
            Problem("messages[0].role", Rule.BAD_ROLE, "'bot'"),
        ),
        (
            {"messages": [{"role": "user", "content": "x"}]},
            "chat",
            Problem("messages", Rule.NO_ANSWER),
        ),
        (
            {"tokens": ["a", ""], "tags": [0, 1]},
            "token_classification",
            Problem("tokens[1]", Rule.EMPTY),
        ),
        (
            {"tokens": ["a"], "tags": [True]},
            "token_classification",
            Problem("tags", Rule.MIXED_TAGS, "boolean"),
        ),
        (
            {"tokens": ["a"], "tags": ["O", "O"]},
            "token_classification",
            Problem("tags", Rule.COUNT_MISMATCH, count=2, limit=1),
        ),
    ],
)
def test_first_problem_names_field_and_rule(row: Any, fmt: str, problem: Problem) -> None:
    assert row_problems(row, fmt)[0] == problem


def test_valid_rows_have_no_problems_and_limits_apply() -> None:
    assert row_problems(CHAT, "chat") == []
    assert row_problems({"prompt": "", "completion": "c", "id": 3}, "prompt_completion") == []
    assert row_problems({"tokens": ["a", "b"], "tags": [1, 0]}, "token_classification") == []
    limits = RowLimits(max_messages=1)
    assert row_problems(CHAT, "chat", limits) == [
        Problem("messages", Rule.TOO_MANY, count=2, limit=1)
    ]
    assert row_problems(CHAT, "chat", NO_LIMITS) == []
    assert row_problems({"prompt": 1}, "prompt_completion") == [
        Problem("prompt", Rule.NOT_STRING, "int"),
        Problem("completion", Rule.MISSING),
    ]


def test_kind_of_speaks_json() -> None:
    assert [kind_of(v) for v in ({}, [], "", True, None, 1, 1.5)] == [
        "object",
        "array",
        "string",
        "boolean",
        "null",
        "int",
        "float",
    ]
