"""Tenancy of s3:// references (issue 15, defect 2), against a real local S3 server (moto).

Buckets on TOV_S3_BUCKETS and templates on TOV_S3_PREFIXES are per tenant: a tenant reads only
keys under its own prefix (`NAME/` by default). Tenant B = tenant A's name + "b", so A's prefix is
a string prefix of B's: neither reads the other's objects, by `..`, percent-encoding, double
slashes, case or a key that starts with the other's name. Shared prefixes are read by both. A
copy over the tenant's storage quota is refused with 413.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.s3_server import moto_s3
from tests.service_fixtures import make_key

BUCKET = "tov-tenants"
OTHER = "tov-elsewhere"
MARKER = "S3-TENANT-A-MARKER"


def body(text: str, rows: int = 3) -> bytes:
    return "".join(json.dumps({"text": f"{text} {i}"}) + "\n" for i in range(rows)).encode()


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    with moto_s3(BUCKET, OTHER) as (endpoint, client):
        yield endpoint, client


@pytest.fixture()
def world(
    s3: tuple[str, Any], service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from app.core.config import get_settings
    from app.main import create_app

    endpoint, client = s3
    a = f"s3t-{secrets.token_hex(3)}"
    b = a + "b"
    settings = get_settings()
    for name, value in {
        "s3_buckets": [BUCKET],
        "s3_prefixes": [f"s3://{OTHER}/tenants/{{tenant}}/in/"],
        "s3_shared_prefixes": [f"s3://{OTHER}/public/"],
        "s3_endpoint_url": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": "testing",
        "s3_secret_access_key": SecretStr("testing"),
        "s3_allow_private_endpoint": True,
    }.items():
        monkeypatch.setattr(settings, name, value)
    objects = {
        (BUCKET, f"{a}/pool.jsonl"): body(MARKER),
        (BUCKET, f"{b}/own.jsonl"): body("b's row"),
        (BUCKET, f"{a.upper()}/pool.jsonl"): body(MARKER),
        (BUCKET, f"{a}b-not-b/pool.jsonl"): body(MARKER),
        (BUCKET, "loose.jsonl"): body(MARKER),
        (OTHER, f"tenants/{a}/in/pool.jsonl"): body(MARKER),
        (OTHER, f"tenants/{a}/out.jsonl"): body(MARKER),
        (OTHER, "public/shared.jsonl"): body("for everyone"),
    }
    for (bucket, key), content in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=content)
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        yield {"api": api, "a": make_key(a), "b": make_key(b), "names": (a, b)}


def register(world: dict[str, Any], who: str, uri: str) -> Any:
    return world["api"].post("/v1/datasets?wait=true", json={"uri": uri}, headers=_auth(world[who]))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_each_tenant_reads_its_own_prefix_and_the_shared_one(world: dict[str, Any]) -> None:
    a, b = world["names"]
    for who, uri in (
        ("a", f"s3://{BUCKET}/{a}/pool.jsonl"),
        ("a", f"s3://{OTHER}/tenants/{a}/in/pool.jsonl"),
        ("b", f"s3://{BUCKET}/{b}/own.jsonl"),
        ("a", f"s3://{OTHER}/public/shared.jsonl"),
        ("b", f"s3://{OTHER}/public/shared.jsonl"),
    ):
        response = register(world, who, uri)
        assert response.status_code == 201, (who, uri, response.text)


def test_b_cannot_read_a_objects_by_any_spelling(world: dict[str, Any]) -> None:
    a, b = world["names"]
    spellings = [
        f"s3://{BUCKET}/{a}/pool.jsonl",
        f"s3://{BUCKET}/{b}/../{a}/pool.jsonl",
        f"s3://{BUCKET}/{b}/%2e%2e/{a}/pool.jsonl",
        f"s3://{BUCKET}/{b}/%2E%2E%2F{a}%2Fpool.jsonl",
        f"s3://{BUCKET}/{b}/..%2f{a}/pool.jsonl",
        f"s3://{BUCKET}/{b}%2f..%2f{a}/pool.jsonl",
        f"s3://{BUCKET}/{b}//{a}/pool.jsonl",
        f"s3://{BUCKET}//{a}/pool.jsonl",
        f"s3://{BUCKET}/./{a}/pool.jsonl",
        f"s3://{BUCKET}/{a.upper()}/pool.jsonl",
        f"s3://{BUCKET}/{b.upper()}/../{a}/pool.jsonl",
        f"s3://{BUCKET.upper()}/{a}/pool.jsonl",
        f"S3://{BUCKET}/{a}/pool.jsonl",
        f"s3://{BUCKET}/loose.jsonl",
        f"s3://{OTHER}/tenants/{a}/in/pool.jsonl",
        f"s3://{OTHER}/tenants/{b}/in/../../{a}/in/pool.jsonl",
        f"s3://{OTHER}/tenants/{a}/out.jsonl",
        f"s3://{OTHER}/public/../tenants/{a}/in/pool.jsonl",
        f"s3://{OTHER}/public/%2e%2e/tenants/{a}/in/pool.jsonl",
        f"s3://{OTHER}/tenants/{{tenant}}/in/pool.jsonl",
    ]
    for uri in spellings:
        for response in (
            register(world, "b", uri),
            world["api"].post(
                "/v1/jobs", json={"pool": uri, "validation": uri}, headers=_auth(world["b"])
            ),
        ):
            assert response.status_code == 422, (uri, response.text)
            assert MARKER not in response.text
    detail = register(world, "b", f"s3://{BUCKET}/{a}/pool.jsonl").json()["detail"]
    assert f"outside the S3 prefixes tenant '{b}' may read" in detail
    assert f"s3://{BUCKET}/{b}/" in detail


def test_a_name_that_prefixes_another_reads_only_its_own(world: dict[str, Any]) -> None:
    """A's name is a string prefix of B's (and of another key): prefixes end at a '/'."""
    a, b = world["names"]
    for uri in (f"s3://{BUCKET}/{b}/own.jsonl", f"s3://{BUCKET}/{a}b-not-b/pool.jsonl"):
        response = register(world, "a", uri)
        assert response.status_code == 422, (uri, response.text)
        assert "b's row" not in response.text and MARKER not in response.text


def test_a_reference_copy_over_the_storage_quota_is_refused(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = world["names"]
    from app.core.config import get_settings

    quota = len(body(MARKER)) + 10
    monkeypatch.setattr(get_settings(), "max_stored_bytes_per_tenant", quota)
    first = register(world, "a", f"s3://{BUCKET}/{a}/pool.jsonl")
    assert first.status_code == 201, first.text
    second = register(world, "a", f"s3://{OTHER}/tenants/{a}/in/pool.jsonl")
    assert second.status_code == 413, second.text
    detail = second.json()["detail"]
    assert f"quota of {quota} bytes" in detail
    assert f"stores {len(body(MARKER))} bytes" in detail
    assert "TOV_MAX_STORED_BYTES_PER_TENANT" in detail
