"""S2: every malformed input of the committed corpus is refused with a precise 4xx.

The corpus (tests/security/corpus/, written by tests/security/make_corpus.py) holds >= 200 files:
bad Parquet, bad UTF-8, huge lines, NaN/Infinity, gzip/zstd bombs, empty files, wrong schemas,
duplicate keys, deep nesting, wrong content types. Each is uploaded to a real API (PostgreSQL
behind it) under the corpus' small limits; the answer must be the expected status as
application/problem+json, its detail (or one of its errors) must name the problem, dataset errors
must say where ({file, line|row, field, reason}), and nothing may be stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.make_corpus import CORPUS

MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
CASES = MANIFEST["cases"]


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 200
    kinds = {case["name"].split("-")[0] for case in CASES}
    assert {"jsonl", "parquet", "csv", "compressed", "content"} <= kinds


@pytest.fixture(scope="module")
def corpus_api(service_env: dict[str, str]) -> Iterator[tuple[Any, str]]:
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app
    from tests.service_fixtures import make_key

    settings = get_settings()
    saved = {name: getattr(settings, name) for name in MANIFEST["settings"]}
    for name, value in MANIFEST["settings"].items():
        setattr(settings, name, value)
    try:
        with TestClient(create_app(), raise_server_exceptions=False) as client:
            yield client, make_key("corpus")
    finally:
        for name, value in saved.items():
            setattr(settings, name, value)


def _mentions(problem: dict[str, Any], phrase: str) -> bool:
    texts = [str(problem.get("detail", ""))]
    for error in problem.get("errors") or []:
        texts += [str(error.get("reason", "")), str(error.get("field", ""))]
    return any(phrase in text for text in texts)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_malformed_input_is_refused_precisely(
    case: dict[str, Any], corpus_api: tuple[Any, str], service_dirs: dict[str, Path]
) -> None:
    client, key = corpus_api
    body = (CORPUS / case["file"]).read_bytes()
    before = _stored(service_dirs["artifacts"])
    response = client.post(
        "/v1/datasets",
        params={"name": case["file"]},
        content=body,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": case["content_type"],
            **case["headers"],
        },
    )
    assert response.status_code == case["status"], response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert _mentions(problem, case["expect"]), (case["expect"], problem)
    if case["field"]:
        fields = [e.get("field") for e in problem.get("errors") or []]
        assert case["field"] in fields, (case["field"], problem)
    if response.status_code == 422 and problem.get("errors"):
        for error in problem["errors"]:
            assert error["file"] == case["file"]
            assert {"field", "reason"} <= set(error)
            assert "line" in error or "row" in error, error
    assert "Traceback" not in response.text
    assert _stored(service_dirs["artifacts"]) == before, "a refused file was kept"


def _stored(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}
