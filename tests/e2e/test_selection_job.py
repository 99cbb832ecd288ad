"""One real selection job, end to end: HTTP API -> Postgres -> Redis -> Celery worker -> engine."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import running_api, running_worker, wait_for_job
from tests.service_fixtures import write_jsonl

pytestmark = pytest.mark.e2e

TARGET = [
    {
        "prompt": f"What is {a} plus {b}?",
        "completion": f"{a} plus {b} is {a + b}.",
        "source": "arithmetic",
    }
    for a, b in [(2, 3), (4, 1), (7, 5), (6, 2), (9, 3), (8, 8)]
]
OTHER = [
    {
        "prompt": f"Name a colour of the {thing}.",
        "completion": f"The {thing} is {colour}.",
        "source": "colours",
    }
    for thing, colour in [
        ("sky", "blue"),
        ("grass", "green"),
        ("sun", "yellow"),
        ("snow", "white"),
        ("coal", "black"),
        ("rose", "red"),
    ]
    * 4
]


@pytest.fixture()
def logs(tmp_path: Path) -> Path:
    return tmp_path


def test_a_job_travels_the_whole_way(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    installed_tiny_model: Path,
    api_key: str,
    logs: Path,
) -> None:
    pool_rows = OTHER + TARGET * 2
    pool_path = write_jsonl(service_dirs["data"] / "pool.jsonl", pool_rows)
    validation = "".join(json.dumps(r) + "\n" for r in TARGET[:4]).encode()
    with running_api(service_env, logs) as url, running_worker(service_env, logs):
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )
        uploaded = client.post(
            "/v1/datasets?name=val.jsonl",
            content=validation,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert uploaded.status_code == 201, uploaded.text
        body = {
            "pool": f"file://{pool_path}",
            "validation": uploaded.json()["id"],
            "selection": {"budget": 8, "strategy": "score+random", "num_bins": 2},
            "tov": {"rounds": 2, "base_size": 4, "learning_rate": 0.01, "batch_size": 4},
            "max_length": 64,
            "seed": 3,
        }
        created = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "e2e-1"})
        assert created.status_code == 202, created.text
        job = wait_for_job(client, created.json()["id"])
        assert job["status"] == "succeeded", (job, (logs / "worker.log").read_text()[-3000:])
        assert job["progress"]["fraction"] == 1.0
        assert job["progress"]["rows_done"] == len(pool_rows) - 4

        lines = client.get(f"/v1/jobs/{job['id']}/selection").text.splitlines()
        selection = [json.loads(line) for line in lines]
        scores = [
            json.loads(line)
            for line in client.get(f"/v1/jobs/{job['id']}/scores").text.splitlines()
        ]
        events = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()]
        subset = [
            json.loads(line)
            for line in client.get(f"/v1/jobs/{job['id']}/subset").text.splitlines()
        ]
        reselected = reselect(
            client, job["id"], {"budget": 6, "strategy": "score-only", "num_bins": 1}
        )
        metrics = client.get("/metrics").text
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404

    assert len(selection) == 8
    assert {row["source"] for row in selection} == {"score", "random"}
    assert len({row["index"] for row in selection}) == 8
    assert len(scores) == len(pool_rows)
    assert sum(row["score"] is None for row in scores) == 4  # the base subset is not scored
    by_index = {row["index"]: row["score"] for row in scores}
    for row in selection:
        if row["source"] == "score":
            assert row["score"] == pytest.approx(by_index[row["index"]])
    assert events[:2] == ["created", "claimed"] and events[-1] == "succeeded"
    assert subset == [pool_rows[i] for i in sorted(row["index"] for row in selection)]
    assert len(reselected) == 6 and {row["source"] for row in reselected} == {"score"}
    top = sorted(
        (row for row in scores if row["score"] is not None),
        key=lambda row: (-row["score"], row["index"]),
    )
    assert [row["index"] for row in reselected] == [row["index"] for row in top[:6]]
    assert 'tov_jobs{status="succeeded"}' in metrics


def reselect(client: httpx.Client, job_id: str, body: dict[str, object]) -> list[dict[str, object]]:
    """POST a new selection, wait until a worker has computed it, download it."""
    created = client.post(f"/v1/jobs/{job_id}/selections", json=body)
    assert created.status_code == 202, created.text
    selection_id = created.json()["id"]
    for _ in range(120):
        state = client.get(f"/v1/jobs/{job_id}/selections/{selection_id}").json()
        if state["status"] != "pending":
            break
        time.sleep(0.25)
    assert state["status"] == "ready", state
    listed = [s["id"] for s in client.get(f"/v1/jobs/{job_id}/selections").json()]
    assert selection_id in listed and len(listed) == 2
    text = client.get(f"/v1/jobs/{job_id}/selection", params={"selection_id": selection_id}).text
    return [json.loads(line) for line in text.splitlines()]
