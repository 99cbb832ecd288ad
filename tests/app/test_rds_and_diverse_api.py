"""RDS+ and the score+diverse strategy through the API, run by a real worker on the tiny model:
created, run, downloaded, re-selected (RDS+) or refused a re-selection (score+diverse)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.app.test_datasets_api import auth, upload

FILLER = [
    {"prompt": f"Question {i}: say something.", "completion": f"Filler {i}."} for i in range(30)
]
TARGETS = [
    {"prompt": "Translate to French: good morning.", "completion": "Bonjour."},
    {"prompt": "What is seven times six?", "completion": "Forty-two."},
]
COPIES = [4, 21]  # where the exact copies of the validation rows sit in the pool


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _datasets(client: Any, api_key: str) -> tuple[str, str]:
    rows = list(FILLER)
    for index, row in zip(COPIES, TARGETS, strict=True):
        rows.insert(index, row)
    pool = upload(client, api_key, _jsonl(rows)).json()["id"]
    val = upload(client, api_key, _jsonl(TARGETS), name="val.jsonl").json()["id"]
    return pool, val


def _run(client: Any, api_key: str, body: dict[str, Any]) -> str:
    from worker.job_runner import JobRunner

    created = client.post("/v1/jobs", json=body, headers=auth(api_key))
    assert created.status_code == 202, created.text
    job_id = str(created.json()["id"])
    JobRunner(job_id).run()
    done = client.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
    assert done["status"] == "succeeded", done
    return job_id


def _download(client: Any, api_key: str, job_id: str, **params: Any) -> list[dict[str, Any]]:
    text = client.get(f"/v1/jobs/{job_id}/selection", params=params, headers=auth(api_key)).text
    return [json.loads(line) for line in text.splitlines() if line]


def test_rds_through_the_api_picks_the_copies_and_reselects(
    client: Any, api_key: str, installed_tiny_model: Path
) -> None:
    from worker.reselect import compute_selection

    pool, val = _datasets(client, api_key)
    body = {
        "pool": pool,
        "validation": val,
        "model": "tiny-llama",
        "method": "rds",
        "selection": {"budget": 2},
    }
    job_id = _run(client, api_key, body)
    rows = _download(client, api_key, job_id)
    assert sorted(r["index"] for r in rows) == COPIES
    assert {r["source"] for r in rows} == {"score"}
    # A re-selection of a larger budget extends the round-robin order: the copies stay first.
    h = auth(api_key)
    made = client.post(f"/v1/jobs/{job_id}/selections", json={"budget": 6}, headers=h)
    assert made.status_code == 202, made.text
    compute_selection(made.json()["id"])
    again = _download(client, api_key, job_id, selection_id=made.json()["id"])
    assert len(again) == 6 and sorted(r["index"] for r in again[:2]) == COPIES


def test_score_diverse_through_the_api_marks_its_diverse_rows(
    client: Any, api_key: str, installed_tiny_model: Path
) -> None:
    pool, val = _datasets(client, api_key)
    body = {
        "pool": pool,
        "validation": val,
        "model": "tiny-llama",
        "selection": {"budget": 8, "strategy": "score+diverse"},
        "max_length": 64,
    }
    job_id = _run(client, api_key, body)
    rows = _download(client, api_key, job_id, explain="true")
    assert [r["source"] for r in rows] == ["score"] * 4 + ["diverse"] * 4
    assert [r["reason"] for r in rows[4:]] == ["diverse"] * 4
    assert len({r["index"] for r in rows}) == 8
    h = auth(api_key)
    # Re-selecting from stored scores has no embeddings: score+diverse is refused, plainly.
    refused = client.post(
        f"/v1/jobs/{job_id}/selections", json={"strategy": "score+diverse"}, headers=h
    )
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["errors"][0]["field"] == "strategy"
    assert "embeddings" in problem["detail"]
    other = client.post(f"/v1/jobs/{job_id}/selections", json={"strategy": "score-only"}, headers=h)
    assert other.status_code == 202, other.text
