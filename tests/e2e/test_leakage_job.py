"""The leakage check end to end (HTTP API -> Postgres -> Redis -> Celery worker -> engine): a
job names decontamination datasets uploaded as JSONL, CSV and Parquet; the pool rows that repeat
them (exactly or nearly) are listed by GET /v1/jobs/{id}/leaks, counted on the job, and never
selected, not by the job and not by a re-selection from its stored scores. A tenant cannot name
another tenant's dataset."""

from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.e2e.processes import running_api, running_worker, wait_for_job
from tests.e2e.test_selection_job import OTHER, TARGET
from tests.service_fixtures import make_key, write_jsonl
from tov_client import Client

pytestmark = pytest.mark.e2e

WORDS = [
    "river",
    "mountain",
    "lantern",
    "copper",
    "violet",
    "harbor",
    "meadow",
    "thunder",
    "pencil",
    "garden",
    "orbit",
]
PARAMS: dict[str, Any] = {
    "tov": {"rounds": 1, "base_size": 4, "learning_rate": 0.01, "batch_size": 4},
    "max_length": 64,
    "seed": 3,
}


def _secret_rows(seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"prompt": "Recite:", "completion": " ".join(rng.choice(WORDS) for _ in range(30))}
        for _ in range(2)
    ]


def _table(rows: list[dict[str, str]]) -> pa.Table:
    return pa.table({k: [r[k] for r in rows] for k in ("prompt", "completion")})


def _upload(client: httpx.Client, name: str, content: bytes) -> str:
    response = client.post(f"/v1/datasets?name={name}", content=content)
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


def _changed_word(text: str) -> str:
    words = text.split()
    words[15] = "zeppelin"
    return " ".join(words)


def test_decontamination_references_are_found_and_never_selected(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    installed_tiny_model: Path,
    api_key: str,
    tmp_path: Path,
) -> None:
    jsonl_rows, csv_rows, parquet_rows = _secret_rows(1), _secret_rows(2), _secret_rows(3)
    planted = [  # a copy in other case, and a near copy with one word changed, of each
        {"prompt": r["prompt"], "completion": v}
        for r in jsonl_rows + csv_rows + parquet_rows
        for v in (r["completion"].upper(), _changed_word(r["completion"]))
    ]
    validation_copy = {**TARGET[0], "completion": TARGET[0]["completion"].upper()}
    pool_rows = OTHER + TARGET * 2 + planted + [validation_copy]
    pool = write_jsonl(service_dirs["data"] / "leak-pool.jsonl", pool_rows)
    validation = write_jsonl(service_dirs["data"] / "leak-val.jsonl", TARGET[:4])
    planted_at = set(range(len(OTHER) + 2 * len(TARGET), len(pool_rows) - 1))
    # the pool's copies of validation rows: the plain ones and one in capitals
    validation_at = {i for i, r in enumerate(pool_rows) if r in TARGET[:4]} | {len(pool_rows) - 1}
    csv_buffer, parquet_buffer = io.BytesIO(), io.BytesIO()
    pacsv.write_csv(_table(csv_rows), csv_buffer)
    pq.write_table(_table(parquet_rows), parquet_buffer)
    jsonl_bytes = "".join(json.dumps(r) + "\n" for r in jsonl_rows).encode()
    budget = len(pool_rows) - len(planted) - 2
    with running_api(service_env, tmp_path) as url, running_worker(service_env, tmp_path):
        http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )
        refs = [
            _upload(http, "secret.jsonl", jsonl_bytes),
            _upload(http, "secret.csv", csv_buffer.getvalue()),
            _upload(http, "secret.parquet", parquet_buffer.getvalue()),
        ]
        # Another tenant's dataset cannot be named.
        stranger = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {make_key('leak-b')}"}, timeout=30
        )
        theirs = _upload(stranger, "theirs.jsonl", jsonl_bytes)
        refused = http.post(
            "/v1/jobs",
            json={
                "pool": f"file://{pool}",
                "validation": f"file://{validation}",
                "decontaminate_against": [theirs],
                **PARAMS,
            },
        )
        assert refused.status_code == 404, refused.text
        assert "decontaminate_against[0]" in refused.text or theirs in refused.text

        tov = Client(url, api_key)
        job = tov.create_job(
            f"file://{pool}",
            f"file://{validation}",
            budget=budget,
            decontaminate_against=refs,
            **PARAMS,
        )
        done = wait_for_job(http, job.id)
        log = (tmp_path / "worker.log").read_text()[-3000:]
        assert done["status"] == "succeeded", (done, log)
        assert done["leak_count"] == len(planted) + len(validation_at)
        assert done["stats"]["leaks"]["excluded"] == len(planted)
        assert done["links"]["leaks"] == f"/v1/jobs/{job.id}/leaks"

        page = http.get(f"/v1/jobs/{job.id}/leaks", params={"limit": 4}).json()
        assert page["total"] == done["leak_count"] and page["excluded_total"] == len(planted)
        assert page["next_cursor"] and len(page["items"]) == 4
        leaks = list(tov.iter_job_leaks(job.id, page_size=4))
        assert [x.pool_index for x in leaks] == sorted(planted_at | validation_at)
        for leak in leaks:
            if leak.pool_index in validation_at:  # "report" by default: listed, selectable
                assert (leak.source, leak.excluded, leak.kind) == ("validation", False, "exact")
                assert leak.dataset == done["validation"]
                assert TARGET[leak.match_index]["prompt"] == pool_rows[leak.pool_index]["prompt"]
                continue
            assert leak.source == "decontaminate" and leak.excluded
            k = (leak.pool_index - min(planted_at)) // 4  # which file's rows it copies
            assert leak.dataset == refs[k]
            assert leak.kind == (
                "exact" if (leak.pool_index - min(planted_at)) % 2 == 0 else "near"
            )
            assert 0.6 <= leak.similarity <= 1.0 and leak.match_preview

        selected = {
            json.loads(line)["index"]
            for line in http.get(f"/v1/jobs/{job.id}/selection").text.splitlines()
        }
        assert len(selected) == budget and not selected & planted_at

        # A re-selection from the stored scores keeps them out too (the whole budget left).
        reselect = http.post(
            f"/v1/jobs/{job.id}/selections",
            json={"budget": len(pool_rows) - len(planted), "strategy": "score+random"},
        )
        assert reselect.status_code == 202, reselect.text
        sid = reselect.json()["id"]
        deadline = time.monotonic() + 120
        while (row := http.get(f"/v1/jobs/{job.id}/selections/{sid}").json())[
            "status"
        ] == "pending":
            assert time.monotonic() < deadline, row
            time.sleep(0.3)
        assert row["status"] == "ready", row
        again = http.get(f"/v1/jobs/{job.id}/selection", params={"selection_id": sid}).text
        picked = {json.loads(line)["index"] for line in again.splitlines()}
        assert picked == set(range(len(pool_rows))) - planted_at
        too_many = http.post(f"/v1/jobs/{job.id}/selections", json={"budget": len(pool_rows)})
        sid = too_many.json()["id"]
        while (row := http.get(f"/v1/jobs/{job.id}/selections/{sid}").json())[
            "status"
        ] == "pending":
            time.sleep(0.3)
        assert row["status"] == "failed" and "excluding" in row["error"]

        # The dataset is in use: it cannot be deleted while the job exists.
        assert http.delete(f"/v1/datasets/{refs[0]}").status_code == 409
        # The other tenant sees nothing of the job.
        assert stranger.get(f"/v1/jobs/{job.id}/leaks").status_code == 404
