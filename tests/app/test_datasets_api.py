"""Datasets: uploads, registrations under data roots, and precise errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.service_fixtures import write_jsonl

ROWS = [
    {"prompt": f"Question {i}?", "completion": f"Answer {i}.", "source": "demo"} for i in range(5)
]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client: Any, key: str, body: bytes, name: str = "pool.jsonl") -> Any:
    return client.post(
        f"/v1/datasets?name={name}",
        content=body,
        headers={**auth(key), "Content-Type": "application/x-ndjson"},
    )


def test_upload_counts_rows_and_detects_the_format(client: Any, api_key: str) -> None:
    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    response = upload(client, api_key, body)
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["rows"] == 5
    assert data["row_format"] == "prompt_completion"
    assert data["columns"] == ["prompt", "completion", "source"]
    again = client.get(f"/v1/datasets/{data['id']}", headers=auth(api_key))
    assert again.json()["sha256"] == data["sha256"]


def test_malformed_line_is_reported_with_line_and_reason(client: Any, api_key: str) -> None:
    body = (json.dumps(ROWS[0]) + "\n{not json\n" + json.dumps({"prompt": "p"}) + "\n").encode()
    response = upload(client, api_key, body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["errors"][0]["line"] == 2
    assert "malformed JSON" in problem["errors"][0]["reason"]
    assert problem["errors"][1] == {
        "file": "pool.jsonl",
        "line": 3,
        "field": "completion",
        "reason": "must be a non-empty string",
    }
    assert "line 2" in problem["detail"]


def test_empty_file_and_nan_and_bad_utf8_are_rejected(client: Any, api_key: str) -> None:
    assert "no rows" in upload(client, api_key, b"").json()["detail"]
    nan = upload(client, api_key, b'{"text": "a", "w": NaN}\n').json()
    assert nan["errors"][0]["reason"] == "malformed JSON: NaN is not allowed"
    bad = upload(client, api_key, b'{"text": "\xff\xfe"}\n').json()
    assert "invalid UTF-8" in bad["errors"][0]["reason"]


def test_register_requires_a_path_under_a_data_root(
    client: Any, api_key: str, service_dirs: dict[str, Path], tmp_path: Path
) -> None:
    inside = write_jsonl(service_dirs["data"] / "val.jsonl", ROWS[:2])
    ok = client.post("/v1/datasets", json={"uri": f"file://{inside}"}, headers=auth(api_key))
    assert ok.status_code == 201, ok.text
    outside = write_jsonl(tmp_path / "secret.jsonl", ROWS)
    denied = client.post("/v1/datasets", json={"uri": f"file://{outside}"}, headers=auth(api_key))
    assert denied.status_code == 422
    assert "not under a configured data root" in denied.json()["detail"]
    escape = client.post(
        "/v1/datasets", json={"uri": f"file://{service_dirs['data']}/../x"}, headers=auth(api_key)
    )
    assert escape.status_code == 422


def test_requests_without_a_valid_key_are_refused(client: Any) -> None:
    assert client.get("/v1/datasets").status_code == 401
    response = client.get("/v1/datasets", headers=auth("tov_nope_nope"))
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or revoked API key."
