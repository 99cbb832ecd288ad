"""Limits as real settings (issue 15, defect 5): each limit is read from the environment
(TOV_RATE_LIMIT_PER_SECOND, TOV_RATE_LIMIT_BURST, TOV_MAX_ACTIVE_JOBS_PER_TENANT,
TOV_MAX_JSON_BODY_BYTES, TOV_UPLOADS_PER_MINUTE, TOV_MAX_STORED_BYTES_PER_TENANT) and enforced.

In-process tests set the variables, clear the settings cache (as a restart would) and talk to the
app; one test starts a real uvicorn process with the variables in its environment.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core import limits
from tests.security.helpers import running_api
from tests.service_fixtures import make_key

ROWS = "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(4)).encode()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def configure(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set TOV_* variables and re-read the settings, as a restarted service would."""
    from app.core.config import get_settings

    def apply(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"TOV_{name.upper()}", str(value))
        get_settings.cache_clear()

    limits.buckets.clear()
    limits.upload_buckets.clear()
    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()
    limits.buckets.clear()
    limits.upload_buckets.clear()


@pytest.fixture()
def client(configure: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def tenant(prefix: str) -> str:
    return make_key(f"{prefix}-{secrets.token_hex(3)}")


def upload(client: Any, key: str, content: bytes = ROWS, name: str = "p.jsonl") -> Any:
    return client.post(
        f"/v1/datasets?name={name}",
        content=content,
        headers={**auth(key), "Content-Type": "application/x-ndjson"},
    )


def test_every_limit_is_a_setting_read_from_the_environment(configure: Any) -> None:
    from app.core.config import get_settings

    configure(
        rate_limit_per_second=2.5,
        rate_limit_burst=7,
        max_active_jobs_per_tenant=4,
        max_json_body_bytes=4096,
        uploads_per_minute=12,
        max_stored_bytes_per_tenant=10_000,
    )
    got = limits.limits_from(get_settings())
    assert (got.rate_per_second, got.burst, got.max_active_jobs, got.max_json_body_bytes) == (
        2.5,
        7,
        4,
        4096,
    )
    assert (got.uploads_per_minute, got.max_stored_bytes) == (12, 10_000)


def test_rate_and_burst(client: Any, configure: Any) -> None:
    configure(rate_limit_per_second=0.01, rate_limit_burst=3)
    key, other = tenant("rate-env-a"), tenant("rate-env-b")
    assert [client.get("/v1/jobs", headers=auth(key)).status_code for _ in range(3)] == [200] * 3
    limited = client.get("/v1/jobs", headers=auth(key))
    assert limited.status_code == 429
    assert "at most 0.01 a second per tenant" in limited.json()["detail"]
    assert "TOV_RATE_LIMIT_PER_SECOND" in limited.json()["detail"]
    assert int(limited.headers["Retry-After"]) >= 60
    assert client.get("/v1/jobs", headers=auth(other)).status_code == 200


def test_active_jobs_per_tenant(client: Any, configure: Any) -> None:
    configure(max_active_jobs_per_tenant=1)
    key = tenant("jobs-env")
    dataset = upload(client, key).json()["id"]
    body = {"pool": dataset, "validation": dataset, "selection": {"budget": 2}}
    assert client.post("/v1/jobs", json=body, headers=auth(key)).status_code == 202
    second = client.post("/v1/jobs", json={**body, "seed": 1}, headers=auth(key))
    assert second.status_code == 429, second.text
    assert "at most 1 per tenant" in second.json()["detail"]
    assert "TOV_MAX_ACTIVE_JOBS_PER_TENANT" in second.json()["detail"]


def test_json_body_bytes(client: Any, configure: Any) -> None:
    configure(max_json_body_bytes=2000)
    key = tenant("json-env")
    big = {"pool": "ds_x", "validation": "ds_x", "metadata": {"blob": "x" * 3000}}
    response = client.post("/v1/jobs", json=big, headers=auth(key))
    assert response.status_code == 413
    assert "exceeds the limit of 2000 bytes" in response.json()["detail"]


def test_uploads_per_minute(client: Any, configure: Any, service_dirs: dict[str, Path]) -> None:
    configure(uploads_per_minute=2)
    key, other = tenant("uploads-env-a"), tenant("uploads-env-b")
    shared = service_dirs["data"] / f"uploads-{secrets.token_hex(3)}.jsonl"
    shared.write_bytes(ROWS)
    assert upload(client, key).status_code == 201
    registered = client.post("/v1/datasets", json={"uri": f"file://{shared}"}, headers=auth(key))
    assert registered.status_code == 201, registered.text
    for refused in (
        upload(client, key),
        client.post("/v1/datasets", json={"uri": f"file://{shared}"}, headers=auth(key)),
    ):
        assert refused.status_code == 429, refused.text
        assert "at most 2 a minute per tenant" in refused.json()["detail"]
        assert "TOV_UPLOADS_PER_MINUTE" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) >= 1
    # Reads and other tenants are not affected.
    assert client.get("/v1/datasets", headers=auth(key)).status_code == 200
    assert upload(client, other).status_code == 201


def test_stored_bytes_per_tenant(client: Any, configure: Any) -> None:
    configure(max_stored_bytes_per_tenant=2 * len(ROWS) + 10)
    key, other = tenant("stored-env-a"), tenant("stored-env-b")
    first, second = upload(client, key), upload(client, key)
    assert (first.status_code, second.status_code) == (201, 201)
    over = upload(client, key)
    assert over.status_code == 413, over.text
    detail = over.json()["detail"]
    assert f"stores {2 * len(ROWS)} bytes" in detail
    assert f"quota of {2 * len(ROWS) + 10} bytes" in detail
    assert "TOV_MAX_STORED_BYTES_PER_TENANT" in detail
    # Streamed without a declared length: cut off at the room left, same answer.
    chunked = client.post(
        "/v1/datasets?name=c.jsonl",
        content=iter([ROWS[:10], ROWS[10:]]),
        headers={**auth(key), "Content-Type": "application/x-ndjson"},
    )
    assert chunked.status_code == 413, chunked.text
    assert "TOV_MAX_STORED_BYTES_PER_TENANT" in chunked.json()["detail"]
    assert upload(client, other).status_code == 201  # another tenant has its own quota
    # Deleting a dataset frees its bytes.
    deleted = client.delete(f"/v1/datasets/{first.json()['id']}", headers=auth(key))
    assert deleted.status_code == 204
    assert upload(client, key).status_code == 201


def test_a_real_server_takes_its_limits_from_the_environment(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, "TOV_RATE_LIMIT_PER_SECOND": "0.01", "TOV_RATE_LIMIT_BURST": "2"}
    key = tenant("rate-env-process")
    with running_api(env, tmp_path / "api.log") as api:
        statuses = []
        for _ in range(3):
            request = urllib.request.Request(f"{api.url}/v1/jobs", headers=auth(key))
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
    assert statuses == [200, 200, 429]
