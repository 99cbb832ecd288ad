"""`code` in every problem body and failed job is one of a documented enum (ErrorCode):
stable snake_case strings, never a Python class name, each with its HTTP status."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import ApiError, ErrorCode, job_error_code
from tests.app.test_datasets_api import auth

ROOT = Path(__file__).resolve().parents[2]


def _code_values(node: ast.AST) -> list[ast.expr]:
    """The expressions `node` gives as an error code: `code=`/`error_code=` keywords,
    `x.error_code = ...` assignments and a dict's "code"."""
    if isinstance(node, ast.keyword):
        return [node.value] if node.arg in ("code", "error_code") else []
    if isinstance(node, ast.Assign):
        named = any(isinstance(t, ast.Attribute) and t.attr == "error_code" for t in node.targets)
        return [node.value] if named else []
    if isinstance(node, ast.Dict):
        pairs = zip(node.keys, node.values, strict=True)
        return [v for k, v in pairs if isinstance(k, ast.Constant) and k.value == "code"]
    return []


def _code_literals() -> set[str]:
    """Every string literal given as an error code anywhere in app/ and worker/."""
    found: set[str] = set()
    for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "worker").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for value in _code_values(node):
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.add(value.value)
    return found


def test_every_code_in_the_api_is_in_the_enum() -> None:
    values = {c.value for c in ErrorCode}
    assert all(v.islower() and v.replace("_", "").isalpha() for v in values)
    assert _code_literals() <= values
    subclasses, seen = list(ApiError.__subclasses__()), []
    while subclasses:
        cls = subclasses.pop()
        seen.append(cls)
        subclasses.extend(cls.__subclasses__())
    assert all(isinstance(cls.code, ErrorCode) for cls in [ApiError, *seen])


def test_problem_bodies_carry_enum_codes(client: Any, api_key: str) -> None:
    answers = {
        "not_found": client.get("/v1/no-such-path", headers=auth(api_key)),
        "method_not_allowed": client.put("/v1/jobs", headers=auth(api_key)),
        "unauthorized": client.get("/v1/jobs"),
        "invalid_request": client.post("/v1/jobs", json={"pool": 1}, headers=auth(api_key)),
    }
    for code, answer in answers.items():
        assert answer.json()["code"] == code, (code, answer.text)
        assert answer.json()["type"].endswith(f"/problems/{code}")
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Problem"]
    assert set(schema["properties"]["code"]["enum"]) == {c.value for c in ErrorCode}


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("DataError", "data_error"),
        ("ModelError", "model_error"),
        ("ConfigError", "config_error"),
        ("CheckpointError", "checkpoint_error"),
        ("EngineError", "engine_error"),
        ("SomeNewEngineError", "engine_error"),
        ("shard_failed", "shard_failed"),
        ("attempts_exhausted", "attempts_exhausted"),
        ("stalled", "stalled"),
        ("run_timeout", "run_timeout"),
        (None, None),
    ],
)
def test_job_error_codes_are_never_class_names(stored: str | None, shown: str | None) -> None:
    assert job_error_code(stored) == shown
