"""The artifact store behind fsspec (app/core/artifacts.py), against a real local S3 server (moto
in server mode) as well as a folder: objects written whole, trees synced with their `done`
markers last, and an upload -> real job -> /subset round trip whose dataset lives only in S3."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.app.test_datasets_api import auth
from tests.app.test_download_matrix import parse, upload
from tests.s3_server import moto_s3

BUCKET = "tov-artifacts"
PREFIX = "store/v1"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[tuple[str, Any]]:
    """A moto S3 server on a free loopback port with the store's bucket; (endpoint, client)."""
    with moto_s3(BUCKET) as (endpoint, s3):
        yield endpoint, s3


def s3_settings(endpoint: str) -> dict[str, Any]:
    from pydantic import SecretStr

    return {
        "artifact_store": f"s3://{BUCKET}/{PREFIX}",
        "artifact_s3_endpoint_url": endpoint,
        "artifact_s3_region": "us-east-1",
        "artifact_s3_access_key_id": "testing",
        "artifact_s3_secret_access_key": SecretStr("testing"),
    }


@pytest.fixture()
def s3_store(s3_server: tuple[str, Any], service_env: dict[str, str], monkeypatch: Any) -> Any:
    """The service's settings pointed at the S3 store; yields the boto3 client."""
    from app.core.config import get_settings

    settings = get_settings()
    for name, value in s3_settings(s3_server[0]).items():
        monkeypatch.setattr(settings, name, value)
    return s3_server[1]


def keys(s3: Any, prefix: str = PREFIX) -> list[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(str(o["Key"]) for o in listed)


@pytest.fixture(params=["folder", "s3"])
def store(request: Any, tmp_path: Path, s3_server: tuple[str, Any]) -> Any:
    from app.core.artifacts import artifact_store
    from app.core.config import Settings

    if request.param == "folder":
        return artifact_store(
            Settings(artifact_root=tmp_path / "scratch", artifact_store=str(tmp_path / "shared"))
        )
    return artifact_store(Settings(artifact_root=tmp_path / "scratch", **s3_settings(s3_server[0])))


def test_objects_are_written_whole_and_read_back(store: Any, tmp_path: Path) -> None:
    key = f"jobs/j-{tmp_path.name}/shards/00001.npy"
    assert not store.exists(key)
    store.write_bytes(key, b"x" * 10)
    store.write_bytes(key, b"payload")  # rewritten whole: a retried shard
    assert store.read_bytes(key) == b"payload" and store.exists(key)
    with store.open(key) as handle:
        handle.seek(3)
        assert handle.read() == b"load"
    assert store.url(key).endswith(f"{PREFIX}/{key}" if not store.local else key)
    assert store.owns(store.url(key))
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(ValueError, match="not a key"):
        store.url("jobs/../../etc/passwd")


def test_trees_sync_markers_last_and_refetch_half_written_stages(
    store: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """What the job's host trained reaches a helper's scratch folder; a stage that a dead
    attempt left half-written there (same sizes, no `done`) is fetched again."""
    trained = tmp_path / "host-a" / "rounds"
    for k in (0, 1):
        (trained / f"round_{k:03d}").mkdir(parents=True)
        (trained / f"round_{k:03d}" / "base.safetensors").write_bytes(bytes([k]) * 64)
        (trained / f"round_{k:03d}" / "done").write_text("")
    (trained / "manifest.json").write_text('{"fingerprint": "f"}')
    prefix = f"jobs/j-{tmp_path.name}/rounds"

    sent: list[str] = []
    put = store.put_file
    monkeypatch.setattr(store, "put_file", lambda f, k, **kw: (sent.append(k), put(f, k, **kw)))
    assert store.upload_tree(trained, prefix) == 5
    names = [k.rsplit("/", 1)[1] for k in sent]
    assert names[:2] == ["base.safetensors"] * 2 and set(names[2:]) == {"done", "manifest.json"}
    assert store.upload_tree(trained, prefix) == 0  # nothing new

    helper = tmp_path / "host-b" / "rounds"
    stale = helper / "round_001" / "base.safetensors"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\xff" * 64)  # same size, no done marker: a half-written stage
    assert store.download_tree(prefix, helper) == 5
    assert stale.read_bytes() == bytes([1]) * 64
    for file in trained.rglob("*"):
        if file.is_file():
            assert (helper / file.relative_to(trained)).read_bytes() == file.read_bytes()
    assert store.download_tree(prefix, helper) == 0


def test_the_default_store_is_the_scratch_folder_itself(tmp_path: Path) -> None:
    """Unset TOV_ARTIFACT_STORE: uris and files stay where they always were; syncs do nothing."""
    from app.core.artifacts import artifact_store
    from app.core.config import Settings

    store = artifact_store(Settings(artifact_root=tmp_path))
    assert store.url("datasets/t/ds_1.jsonl") == str(tmp_path.resolve() / "datasets/t/ds_1.jsonl")
    rounds = tmp_path / "jobs" / "j" / "rounds"
    (rounds / "round_000").mkdir(parents=True)
    (rounds / "round_000" / "done").write_text("")
    assert store.upload_tree(rounds, "jobs/j/rounds") == 0
    assert store.download_tree("jobs/j/rounds", rounds) == 0


def _csv_pool(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "source"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def test_upload_job_and_subset_round_trip_through_the_s3_store(
    client: Any,
    api_key: str,
    s3_store: Any,
    service_dirs: dict[str, Path],
    installed_tiny_model: Path,
) -> None:
    """Uploaded datasets go to S3 only; the worker reads them from its scratch copy (by
    SHA-256); /subset streams the pool's rows from S3; deleting a dataset removes its object."""
    from worker.job_runner import JobRunner

    h = auth(api_key)
    pool_rows = [
        {"text": "hello\nworld", "source": "a"},
        {"text": "second row", "source": "b"},
        {"text": "third, with a comma", "source": "c"},
        {"text": "fourth ✓", "source": "d"},
    ]
    pool = upload(client, api_key, _csv_pool(pool_rows), "pool.csv", "csv")
    validation = "".join(json.dumps(r) + "\n" for r in pool_rows[:2]).encode()
    target = upload(client, api_key, validation, "val.jsonl", "jsonl")
    stored = client.get(f"/v1/datasets/{pool}", headers=h).json()
    pool_key = next(k for k in keys(s3_store) if k.endswith(f"/{pool}.csv"))
    body = s3_store.get_object(Bucket=BUCKET, Key=pool_key)["Body"].read()
    assert body == _csv_pool(pool_rows)
    assert not list((service_dirs["artifacts"] / "datasets").rglob(f"{pool}.*"))

    created = client.post(
        "/v1/jobs",
        json={"pool": pool, "validation": target, "method": "random", "selection": {"budget": 2}},
        headers=h,
    )
    assert created.status_code == 202, created.text
    job = created.json()["id"]
    JobRunner(job).run()
    assert client.get(f"/v1/jobs/{job}", headers=h).json()["status"] == "succeeded"
    # The worker's scratch copy, named by the validated digest.
    scratch_copy = service_dirs["artifacts"] / "inputs" / f"{stored['sha256']}.csv"
    assert scratch_copy.read_bytes() == body

    chosen = client.get(f"/v1/jobs/{job}/selection", headers=h).text.split("\n")
    picked = sorted(json.loads(line)["index"] for line in chosen if line)
    assert len(picked) == 2
    for fmt in ("jsonl", "csv", "parquet"):
        response = client.get(f"/v1/jobs/{job}/subset", params={"format": fmt}, headers=h)
        assert response.status_code == 200, response.text
        columns, rows = parse(response.content, fmt)
        assert columns == ["text", "source"] and rows == [pool_rows[i] for i in picked], fmt

    s3_store.delete_object(Bucket=BUCKET, Key=pool_key)  # the store lost it: a clear 409
    gone = client.get(f"/v1/jobs/{job}/subset", headers=h)
    assert gone.status_code == 409, gone.text
    assert client.delete(f"/v1/jobs/{job}", headers=h).status_code in (200, 204)
    target_key = next(k for k in keys(s3_store) if k.endswith(f"/{target}.jsonl"))
    assert client.delete(f"/v1/datasets/{target}", headers=h).status_code in (200, 204)
    assert target_key not in keys(s3_store)


def test_a_parquet_pool_is_read_from_s3_by_row_group(
    client: Any, api_key: str, s3_store: Any
) -> None:
    """The Parquet reader seeks (footer first) through the S3 object: the download matrix's
    check of every value, with the pool kept in S3."""
    from app.core.db import get_sessionmaker
    from app.core.models import Dataset
    from app.results.pool_rows import PoolFile, parquet_batches, parquet_schema
    from tests.app.test_download_matrix import COLUMNS, ROWS, pool_bytes

    pool = upload(client, api_key, pool_bytes("parquet"), "pool.parquet", "parquet")
    with get_sessionmaker()() as session:
        dataset = session.get(Dataset, pool)
        assert dataset is not None
        uri = dataset.uri
    assert uri.startswith(f"s3://{BUCKET}/{PREFIX}/datasets/")
    file = PoolFile(uri, "parquet", COLUMNS)
    assert parquet_schema(file.path).names == COLUMNS
    wanted = np.array([0, 4, 7])
    rows = [r for b in parquet_batches(file.path, wanted) for r in b.to_pylist()]
    assert rows == [{c: ROWS[i].get(c) for c in COLUMNS} for i in wanted]
