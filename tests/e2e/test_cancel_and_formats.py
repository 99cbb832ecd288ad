"""Cancelling a running job frees its worker; every download format parses back to the same data."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.e2e.processes import running_api, running_worker, wait_for_job
from tests.e2e.test_selection_job import OTHER, TARGET
from tests.service_fixtures import write_jsonl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(
    service_env: dict[str, str],
    installed_tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[httpx.Client]:
    from tests.service_fixtures import make_key

    logs = tmp_path_factory.mktemp("logs")
    key = make_key("e2e-formats")
    with (
        running_api(service_env, logs) as url,
        running_worker(service_env, logs),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http,
    ):
        yield http


def submit(client: httpx.Client, pool: Path, validation: Path, **extra: object) -> str:
    body = {
        "pool": f"file://{pool}",
        "validation": f"file://{validation}",
        "max_length": 64,
        "selection": {"budget": 8, "num_bins": 2},
        **extra,
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def datasets(service_dirs: dict[str, Path]) -> tuple[Path, Path]:
    pool = write_jsonl(service_dirs["data"] / "formats-pool.jsonl", OTHER + TARGET * 2)
    validation = write_jsonl(service_dirs["data"] / "formats-val.jsonl", TARGET[:4])
    return pool, validation


def test_cancelling_a_running_job_stops_it_and_frees_the_worker(
    client: httpx.Client, datasets: tuple[Path, Path]
) -> None:
    pool, validation = datasets
    long_job = submit(client, pool, validation, tov={"rounds": 64, "base_size": 4})
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{long_job}").json()["progress"]["stage"] not in ("train", "score"):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    assert client.post(f"/v1/jobs/{long_job}/cancel").status_code == 200
    asked = time.monotonic()
    job = wait_for_job(client, long_job, timeout=60)
    assert job["status"] == "cancelled", job
    assert time.monotonic() - asked < 30  # the heartbeat notices within a few seconds
    assert client.get(f"/v1/jobs/{long_job}/selection").status_code == 409
    follow_up = submit(client, pool, validation, tov={"rounds": 1, "base_size": 4})
    assert wait_for_job(client, follow_up)["status"] == "succeeded"


def test_every_download_format_parses_back_to_the_same_data(
    client: httpx.Client, datasets: tuple[Path, Path]
) -> None:
    pool, validation = datasets
    job_id = submit(client, pool, validation, tov={"rounds": 1, "base_size": 4})
    assert wait_for_job(client, job_id)["status"] == "succeeded"
    for resource in ("scores", "selection", "subset"):
        url = f"/v1/jobs/{job_id}/{resource}"
        as_json = [json.loads(line) for line in client.get(url).text.splitlines()]
        content = client.get(url, params={"format": "parquet"}).content
        as_parquet = pq.read_table(io.BytesIO(content)).to_pylist()
        text = client.get(url, params={"format": "csv"}).text
        as_csv = list(csv.DictReader(io.StringIO(text)))
        assert len(as_json) == len(as_parquet) == len(as_csv) > 0, resource
        for j, p, c in zip(as_json, as_parquet, as_csv, strict=True):
            assert same_row(j, p) and same_row(j, c), (resource, j, p, c)


def same_row(expected: dict[str, object], got: dict[str, object]) -> bool:
    """Equal field by field; CSV cells are text (nested values as JSON), floats to 1e-6."""
    for key, want in expected.items():
        have = got[key]
        if isinstance(have, str) and not isinstance(want, str):
            if want is None:
                ok = have == ""
            elif isinstance(want, float | int):
                ok = float(have) == pytest.approx(want, rel=1e-6)
            else:
                ok = json.loads(have) == want
        elif isinstance(want, float):
            ok = have == pytest.approx(want, rel=1e-6)
        else:
            ok = have == want
        if not ok:
            return False
    return True


def test_subset_rows_are_the_selected_pool_rows(
    client: httpx.Client, datasets: tuple[Path, Path]
) -> None:
    pool, validation = datasets
    job_id = submit(client, pool, validation, tov={"rounds": 1, "base_size": 4}, seed=5)
    assert wait_for_job(client, job_id)["status"] == "succeeded"
    pool_rows = [json.loads(line) for line in pool.read_text().splitlines()]
    subset = [
        json.loads(line) for line in client.get(f"/v1/jobs/{job_id}/subset").text.splitlines()
    ]
    selection = [
        json.loads(line) for line in client.get(f"/v1/jobs/{job_id}/selection").text.splitlines()
    ]
    assert subset == [pool_rows[i] for i in sorted(r["index"] for r in selection)]
    bad = client.get(f"/v1/jobs/{job_id}/scores", params={"format": "xml"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
