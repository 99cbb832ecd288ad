"""s3:// references against a real local S3 server (moto, started here) and hf:// references from
an offline Hugging Face cache laid out here: copied, validated like uploads, precise refusals."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.app.test_datasets_api import ROWS, auth
from tests.s3_server import moto_s3

BUCKET = "tov-data"
OTHER_BUCKET = "tov-private"
POOL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[tuple[str, Any]]:
    """A moto S3 server on a free loopback port, with two buckets; yields (endpoint, client)."""
    with moto_s3(BUCKET, OTHER_BUCKET) as (endpoint, s3):
        s3.put_object(Bucket=BUCKET, Key="sets/pool.jsonl", Body=POOL)
        s3.put_object(Bucket=OTHER_BUCKET, Key="pool.jsonl", Body=POOL)
        yield endpoint, s3


@pytest.fixture()
def s3_env(s3_server: tuple[str, Any], service_env: dict[str, str], monkeypatch: Any) -> Any:
    """The service configured for the local S3 server (a loopback endpoint the operator allowed)."""
    from pydantic import SecretStr

    from app.core.config import get_settings

    endpoint, s3 = s3_server
    settings = get_settings()
    for name, value in {
        "s3_shared_prefixes": [f"s3://{BUCKET}/"],  # per-tenant: tests/app/test_s3_tenancy.py
        "s3_endpoint_url": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": "testing",
        "s3_secret_access_key": SecretStr("testing"),
        "s3_allow_private_endpoint": True,
    }.items():
        monkeypatch.setattr(settings, name, value)
    return s3


def register(client: Any, key: str, uri: str, **extra: Any) -> Any:
    return client.post("/v1/datasets?wait=true", json={"uri": uri, **extra}, headers=auth(key))


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


def incoming_parts(service_dirs: dict[str, Path]) -> list[Path]:
    return list((service_dirs["artifacts"] / "incoming").glob("*.part"))


# ---------------------------------------------------------------------------------------------
# s3://


def test_s3_object_is_copied_validated_and_registered(
    client: Any, api_key: str, s3_env: Any, service_dirs: dict[str, Path]
) -> None:
    response = register(client, api_key, f"s3://{BUCKET}/sets/pool.jsonl")
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["name"] == "pool.jsonl"
    assert (data["rows"], data["row_format"], data["file_format"]) == (
        5,
        "prompt_completion",
        "jsonl",
    )
    assert data["sha256"] == hashlib.sha256(POOL).hexdigest()
    assert data["size_bytes"] == len(POOL)
    shown = client.get(f"/v1/datasets/{data['id']}", headers=auth(api_key)).json()
    assert shown["sha256"] == data["sha256"]
    stored = list((service_dirs["artifacts"] / "datasets").rglob(f"{data['id']}.jsonl"))
    assert len(stored) == 1 and stored[0].read_bytes() == POOL
    assert not incoming_parts(service_dirs)


def test_s3_parquet_is_detected_from_its_bytes(client: Any, api_key: str, s3_env: Any) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": ["one", "two", "three"]}), buffer)
    s3_env.put_object(Bucket=BUCKET, Key="sets/texts.parquet", Body=buffer.getvalue())
    response = register(client, api_key, f"s3://{BUCKET}/sets/texts.parquet", name="texts")
    assert response.status_code == 201, response.text
    data = response.json()
    assert (data["name"], data["file_format"], data["rows"]) == ("texts", "parquet", 3)


def test_s3_refusals_are_precise(
    client: Any, api_key: str, s3_env: Any, service_dirs: dict[str, Path], monkeypatch: Any
) -> None:
    from app.core.config import get_settings

    other = problem(register(client, api_key, f"s3://{OTHER_BUCKET}/pool.jsonl"), 422)
    assert other["detail"] == (
        f"The bucket '{OTHER_BUCKET}' is not on the allow-list of S3 buckets (TOV_S3_BUCKETS, "
        "TOV_S3_PREFIXES, TOV_S3_SHARED_PREFIXES)."
    )
    missing = problem(register(client, api_key, f"s3://{BUCKET}/sets/nope.jsonl"), 422)
    assert missing["detail"] == (
        f"'s3://{BUCKET}/sets/nope.jsonl' does not exist: bucket '{BUCKET}' has no object with "
        "the key 'sets/nope.jsonl'."
    )
    folder = problem(register(client, api_key, f"s3://{BUCKET}/sets"), 422)
    assert "is a folder (a key prefix)" in folder["detail"]
    for uri, phrase in [
        (f"s3://{BUCKET}/sets/../pool.jsonl", "'..' segment"),
        (f"s3://{BUCKET}//pool.jsonl", "empty, '.' or '..' segment"),
        (f"s3://{BUCKET}/pool.jsonl?versionId=1", "'?' or '#'"),
        (f"s3://{BUCKET}", "must look like s3://BUCKET/KEY"),
        ("s3://Bad_Bucket/pool.jsonl", "not a valid S3 bucket name"),
        (f"s3://user:pw@{BUCKET}/pool.jsonl", "Credentials"),
        (f"s3://{BUCKET}/a b.jsonl", "whitespace"),
    ]:
        assert phrase in problem(register(client, api_key, uri), 422)["detail"], uri

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 100)
    big = problem(register(client, api_key, f"s3://{BUCKET}/sets/pool.jsonl"), 413)
    assert big["detail"] == (
        f"'s3://{BUCKET}/sets/pool.jsonl' is {len(POOL)} bytes; the limit is 100."
    )
    assert not incoming_parts(service_dirs)


def test_s3_rows_are_validated_like_uploads(client: Any, api_key: str, s3_env: Any) -> None:
    body = (json.dumps(ROWS[0]) + "\n{not json\n" + json.dumps({"prompt": "p"}) + "\n").encode()
    s3_env.put_object(Bucket=BUCKET, Key="sets/bad.jsonl", Body=body)
    bad = problem(register(client, api_key, f"s3://{BUCKET}/sets/bad.jsonl"), 422)
    assert bad["errors"][0]["line"] == 2 and "malformed JSON" in bad["errors"][0]["reason"]
    assert bad["errors"][1] == {
        "file": "bad.jsonl",
        "line": 3,
        "field": "completion",
        "reason": "must be a non-empty string",
    }


def test_s3_private_endpoint_needs_the_operators_opt_in(
    client: Any, api_key: str, s3_env: Any, monkeypatch: Any
) -> None:
    from app.core.config import get_settings

    monkeypatch.setattr(get_settings(), "s3_allow_private_endpoint", False)
    refused = problem(register(client, api_key, f"s3://{BUCKET}/sets/pool.jsonl"), 422)
    assert refused["detail"] == (
        "s3:// references are unavailable: the configured S3 endpoint does not resolve to "
        "public addresses only (server-side request forgery protection); an operator may allow "
        "a private endpoint with TOV_S3_ALLOW_PRIVATE_ENDPOINT=true."
    )
    assert "127.0.0.1" not in refused["detail"]  # the operator's endpoint is not disclosed


def test_s3_endpoint_rebinding_is_refused_at_connection_time(
    client: Any,
    api_key: str,
    s3_server: tuple[str, Any],
    s3_env: Any,
    monkeypatch: Any,
    service_dirs: dict[str, Path],
) -> None:
    """The pre-check saw a public address; the connection resolves again to loopback: the
    HTTP client's resolver refuses it, so no request reaches the server."""
    from app.core.config import get_settings
    from app.datasets.sources import s3 as remote_s3

    port = s3_server[0].rsplit(":", 1)[1]
    settings = get_settings()
    monkeypatch.setattr(settings, "s3_endpoint_url", f"http://localhost:{port}")
    monkeypatch.setattr(settings, "s3_allow_private_endpoint", False)
    monkeypatch.setattr(remote_s3, "resolve_once", lambda host, port: "93.184.216.34")
    refused = problem(register(client, api_key, f"s3://{BUCKET}/sets/pool.jsonl"), 422)
    assert "the S3 endpoint could not be reached" in refused["detail"]
    assert not incoming_parts(service_dirs)


def test_s3_resolver_refuses_internal_addresses_except_the_trusted_endpoint() -> None:
    import asyncio

    from app.datasets.sources.s3 import _resolver

    with pytest.raises(OSError, match="loopback"):
        asyncio.run(_resolver(None).resolve("localhost", 80))
    trusted = asyncio.run(_resolver("localhost").resolve("localhost", 80))
    assert trusted and trusted[0]["host"] in ("127.0.0.1", "::1")


def test_s3_and_hf_are_not_configured_by_default(client: Any, api_key: str) -> None:
    s3 = problem(register(client, api_key, f"s3://{BUCKET}/sets/pool.jsonl"), 422)
    assert "s3:// references are not configured" in s3["detail"]
    assert "TOV_S3_BUCKETS is not set" in s3["detail"]
    hf = problem(register(client, api_key, "hf://datasets/acme/qa/train.jsonl"), 422)
    assert "hf:// references are not configured" in hf["detail"]
    assert "TOV_HF_CACHE is not set" in hf["detail"]


# ---------------------------------------------------------------------------------------------
# hf://


def build_hf_cache(root: Path, repo: str, files: dict[str, bytes], ref: str = "main") -> Path:
    """The HF_HUB_CACHE layout huggingface_hub writes: blobs, snapshots/COMMIT -> blobs, refs."""
    owner, name = repo.split("/")
    folder = root / f"datasets--{owner}--{name}"
    for relative, content in files.items():
        blob = folder / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        pointer = folder / "snapshots" / COMMIT / relative
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / ref).write_text(COMMIT)
    return root


@pytest.fixture()
def hf_cache(tmp_path: Path, service_env: dict[str, str], monkeypatch: Any) -> Path:
    from app.core.config import get_settings

    cache = build_hf_cache(tmp_path / "hf-cache", "acme/qa", {"data/train.jsonl": POOL})
    monkeypatch.setattr(get_settings(), "hf_cache", cache)
    return cache


def test_hf_reference_is_read_from_the_offline_cache(
    client: Any, api_key: str, hf_cache: Path
) -> None:
    for uri in (
        "hf://datasets/acme/qa/data/train.jsonl",
        f"hf://datasets/acme/qa@{COMMIT}/data/train.jsonl",
    ):
        response = register(client, api_key, uri)
        assert response.status_code == 201, response.text
        data = response.json()
        assert (data["name"], data["rows"]) == ("train.jsonl", 5)
        assert data["sha256"] == hashlib.sha256(POOL).hexdigest()


def test_hf_refusals_are_precise(
    client: Any, api_key: str, hf_cache: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    from app.core.config import get_settings

    absent = problem(register(client, api_key, "hf://datasets/acme/qa/data/test.jsonl"), 422)
    assert absent["detail"] == (
        "'hf://datasets/acme/qa/data/test.jsonl' is not in this deployment's offline Hugging "
        "Face cache (dataset 'acme/qa', revision 'main', file 'data/test.jsonl'); the server "
        "has no hub access: ask the operator to add it, or upload the file."
    )
    for uri, phrase in [
        ("hf://datasets/acme/qa@v2/data/train.jsonl", "revision 'v2'"),
        ("hf://datasets/acme/other/train.jsonl", "dataset 'acme/other'"),
        ("hf://acme/qa/data/train.jsonl", "only dataset repositories are supported"),
        ("hf://datasets/acme/qa", "names no file"),
        ("hf://datasets/acme/qa/data/../train.jsonl", "'..' segment"),
        ("hf://datasets/acme/qa@../../etc/passwd", "not a supported revision"),
        ("hf://datasets/ac--me/qa/train.jsonl", "not a valid Hugging Face owner"),
    ]:
        assert phrase in problem(register(client, api_key, uri), 422)["detail"], uri

    outside = tmp_path / "secret.jsonl"
    outside.write_bytes(POOL)
    escape = hf_cache / "datasets--acme--qa" / "snapshots" / COMMIT / "escape.jsonl"
    escape.symlink_to(outside)
    escaped = problem(register(client, api_key, "hf://datasets/acme/qa/escape.jsonl"), 422)
    assert "does not resolve to a file inside the cache" in escaped["detail"]

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 10)
    big = problem(register(client, api_key, "hf://datasets/acme/qa/data/train.jsonl"), 413)
    assert "the limit is 10" in big["detail"]

    monkeypatch.setattr(get_settings(), "hf_cache", tmp_path / "not-there")
    gone = problem(register(client, api_key, "hf://datasets/acme/qa/data/train.jsonl"), 422)
    assert "(TOV_HF_CACHE) does not exist on the server" in gone["detail"]


def test_a_job_takes_s3_and_hf_references(
    client: Any, api_key: str, s3_env: Any, hf_cache: Path
) -> None:
    body = {
        "pool": f"s3://{BUCKET}/sets/pool.jsonl",
        "validation": "hf://datasets/acme/qa/data/train.jsonl",
        "selection": {"budget": 2},
    }
    # Issue 15: references are fetched after the answer; the job waits for them, then is sent.
    created = client.post("/v1/jobs", json=body, headers=auth(api_key))
    assert created.status_code == 202, created.text
    ready = settled_job(client, api_key, created.json()["id"])
    assert ready["progress"]["rows_total"] == 5
    assert ready["progress"]["stage"] != "waiting_for_datasets"
    missing = client.post(
        "/v1/jobs", json={**body, "pool": f"s3://{BUCKET}/nope.jsonl"}, headers=auth(api_key)
    )
    assert missing.status_code == 202, missing.text
    failed = settled_job(client, api_key, missing.json()["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_dataset"
    assert failed["error"]["detail"].startswith("pool: dataset 'ds_")
    assert f"'s3://{BUCKET}/nope.jsonl' does not" in failed["error"]["detail"]


def settled_job(client: Any, key: str, job_id: str) -> dict[str, Any]:
    """The job once it no longer waits for its datasets (polled: they validate in a thread)."""
    for _ in range(300):
        job = dict(client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json())
        if job["progress"]["stage"] != "waiting_for_datasets":
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still waits for its datasets: {job}")
