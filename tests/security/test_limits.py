"""Per-tenant quotas (app/core/limits.py): a request rate limit and a cap on queued + running jobs,
both answered 429 problem+json with Retry-After; body limits on JSON requests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.core import limits
from tests.service_fixtures import make_key

ROWS = "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(4)).encode()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def client(service_env: dict[str, str]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    limits.buckets.clear()
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client
    limits.buckets.clear()


def _dataset(client: Any, key: str) -> str:
    response = client.post(
        "/v1/datasets?name=p.jsonl",
        content=ROWS,
        headers={**auth(key), "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_request_rate_is_limited_per_tenant(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.config import get_settings

    monkeypatch.setattr(get_settings(), "rate_limit_per_second", 2.0)
    monkeypatch.setattr(get_settings(), "rate_limit_burst", 3)
    key, other = make_key("rate-a"), make_key("rate-b")
    statuses = [client.get("/v1/jobs", headers=auth(key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = client.get("/v1/jobs", headers=auth(key))
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert int(limited.headers["Retry-After"]) >= 1
    assert "per tenant" in limited.json()["detail"]
    assert client.get("/v1/jobs", headers=auth(other)).status_code == 200  # B is not throttled
    time.sleep(int(limited.headers["Retry-After"]))
    assert client.get("/v1/jobs", headers=auth(key)).status_code == 200


def test_token_bucket_refills_at_the_rate() -> None:
    bucket = limits.TokenBuckets()
    assert [bucket.take("t", rate=10, burst=2, now=0.0) for _ in range(2)] == [0.0, 0.0]
    wait = bucket.take("t", rate=10, burst=2, now=0.0)
    assert wait == pytest.approx(0.1)
    assert bucket.take("t", rate=10, burst=2, now=0.1) == 0.0
    assert bucket.take("t", rate=10, burst=2, now=100.0) == 0.0  # capped at the burst
    assert bucket.take("t", rate=10, burst=2, now=100.0) == 0.0
    assert bucket.take("t", rate=10, burst=2, now=100.0) > 0


def test_active_jobs_are_capped_per_tenant(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.config import get_settings

    monkeypatch.setattr(get_settings(), "max_active_jobs_per_tenant", 2)
    key, other = make_key("quota-a"), make_key("quota-b")
    dataset = _dataset(client, key)
    body = {"pool": dataset, "validation": dataset, "selection": {"budget": 2}}
    first = client.post("/v1/jobs", json=body, headers={**auth(key), "Idempotency-Key": "q-1"})
    second = client.post("/v1/jobs", json={**body, "seed": 1}, headers=auth(key))
    assert (first.status_code, second.status_code) == (202, 202)
    third = client.post("/v1/jobs", json={**body, "seed": 2}, headers=auth(key))
    assert third.status_code == 429, third.text
    assert third.headers["Retry-After"] == str(limits.QUOTA_RETRY_AFTER_S)
    assert "2 jobs are queued or running" in third.json()["detail"]
    # A retry of an accepted job still gets its job back.
    retry = client.post("/v1/jobs", json=body, headers={**auth(key), "Idempotency-Key": "q-1"})
    assert retry.status_code == 202 and retry.json()["id"] == first.json()["id"]
    # Another tenant has its own quota.
    other_dataset = _dataset(client, other)
    assert (
        client.post(
            "/v1/jobs",
            json={**body, "pool": other_dataset, "validation": other_dataset},
            headers=auth(other),
        ).status_code
        == 202
    )
    # Finishing (here: cancelling) a job frees a slot.
    assert (
        client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=auth(key)).status_code == 200
    )
    assert client.post("/v1/jobs", json={**body, "seed": 3}, headers=auth(key)).status_code == 202


def test_json_bodies_are_size_limited_and_never_decompressed(client: Any) -> None:
    key = make_key("json-limit")
    big = {"pool": "ds_x", "validation": "ds_x", "metadata": {"blob": "x" * (2 * 1024 * 1024)}}
    response = client.post("/v1/jobs", json=big, headers=auth(key))
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert "exceeds the limit of 1048576 bytes" in response.json()["detail"]
    register = client.post(
        "/v1/datasets",
        content=b'{"uri": "' + b"a" * (2 << 20) + b'"}',
        headers={**auth(key), "Content-Type": "application/json"},
    )
    assert register.status_code == 413
    encoded = client.post(
        "/v1/jobs",
        content=b"{}",
        headers={**auth(key), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert encoded.status_code == 415
    assert "Content-Encoding 'gzip'" in encoded.json()["detail"]
