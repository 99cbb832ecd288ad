"""Issue 15: the `cancelling` status, pending cancels settled by the claim and the reaper, stage
changes as events, and paging of GET /v1/jobs/{id}/events (after, limit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.app.test_datasets_api import auth
from tests.app.test_multi_target_api import setup_datasets


def _job(client: Any, api_key: str, **extra: Any) -> str:
    pool, (validation, _) = setup_datasets(client, api_key)
    body = {"pool": pool, "validation": validation, "selection": {"budget": 3}, **extra}
    response = client.post("/v1/jobs", json=body, headers=auth(api_key))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _claim(job_id: str, lease_seconds: float = 60.0) -> int:
    from app.core.db import get_sessionmaker
    from worker.lease import claim_job

    with get_sessionmaker()() as session:
        attempt = claim_job(
            session, job_id=job_id, worker="test", lease_seconds=lease_seconds, max_attempts=3
        )
    assert attempt is not None
    return attempt


def _kinds(client: Any, api_key: str, job_id: str) -> list[str]:
    events = client.get(f"/v1/jobs/{job_id}/events", headers=auth(api_key)).json()
    return [e["kind"] for e in events]


def test_a_running_job_is_cancelling_until_its_attempt_stops(client: Any, api_key: str) -> None:
    from app.core.config import get_settings
    from app.core.db import get_sessionmaker
    from app.core.models import JobStatus
    from worker.attempt import AttemptContext
    from worker.publish import finish

    job_id = _job(client, api_key)
    attempt = _claim(job_id)
    answer = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(api_key)).json()
    assert answer["status"] == "cancelling"
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(api_key)).json()
    assert again["status"] == "cancelling"
    listed = client.get("/v1/jobs?status=cancelling", headers=auth(api_key)).json()["items"]
    assert [j["id"] for j in listed] == [job_id]
    context = AttemptContext(
        job_id,
        attempt,
        worker_name="test",
        settings=get_settings(),
        sessions=get_sessionmaker(),
        should_stop=lambda: True,
    )
    context.progress.write("train", 0.5, None, force=True)  # still the attempt's to write
    finish(context, JobStatus.CANCELLED, code="cancelled", detail="cancelled on request")
    done = client.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
    assert done["status"] == "cancelled"
    assert _kinds(client, api_key, job_id).count("cancel_requested") == 1


def test_a_pending_cancel_with_a_dead_worker_is_settled(client: Any, api_key: str) -> None:
    from sqlalchemy import update

    from app.core.config import get_settings
    from app.core.db import get_sessionmaker
    from app.core.models import Job
    from worker.lease import claim_job
    from worker.reaper import reap_once

    by_reaper, by_claim = _job(client, api_key), _job(client, api_key, seed=1)
    for job_id in (by_reaper, by_claim):
        _claim(job_id, lease_seconds=0.0)  # the worker dies at once: its lease expires
        cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(api_key)).json()
        assert cancelled["status"] == "cancelling"
    sessions = get_sessionmaker()
    with sessions() as session:
        # the state the old code left behind: re-queued with the cancel still pending
        session.execute(update(Job).where(Job.id == by_claim).values(status="queued"))
        session.commit()
        attempt = claim_job(session, job_id=by_claim, worker="w", lease_seconds=60, max_attempts=3)
        assert attempt is None
        reap_once(session, get_settings())
    for job_id in (by_reaper, by_claim):
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
        assert job["status"] == "cancelled", job
        assert _kinds(client, api_key, job_id)[-1] == "cancelled"


@pytest.fixture()
def standin_model(service_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TOV_STANDIN_SECONDS", "0,0,0")
    model = service_dirs["models"] / "standin-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return "standin-model"


def test_stage_changes_are_events_and_events_page(
    client: Any, api_key: str, standin_model: str
) -> None:
    from app.core.config import get_settings
    from worker.job_runner import JobRunner

    job_id = _job(client, api_key, model=standin_model)
    runner = JobRunner(job_id)
    runner.settings = get_settings().model_copy(
        update={"engine_entrypoint": "tests.faults.standin_engine:run_selection"}
    )
    runner.run()
    url, h = f"/v1/jobs/{job_id}/events", auth(api_key)
    events = client.get(url, headers=h).json()
    assert events[-1]["kind"] == "succeeded"
    stages = [e["message"].split(":")[0] for e in events if e["kind"] == "stage"]
    assert stages == ["stage resolve", "stage train", "stage score", "stage select"]
    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get(url, params={"after": after, "limit": 2}, headers=h).json()
        paged += page
        if len(page) < 2:
            break
        after = page[-1]["id"]
    assert paged == events
    assert client.get(url, params={"limit": 1}, headers=h).json() == events[:1]
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}):
        assert client.get(url, params=bad, headers=h).status_code == 422
