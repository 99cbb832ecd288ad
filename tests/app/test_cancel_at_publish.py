"""A cancel that lands after the worker's last heartbeat still wins: no result is published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.app.test_datasets_api import auth
from tests.app.test_multi_target_api import setup_datasets


def test_a_cancel_requested_before_publishing_cancels_the_job(
    client: Any, api_key: str, service_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import func, select, update

    from app.core.config import get_settings
    from app.core.db import get_sessionmaker
    from app.core.models import Job, ScoreChunk, Selection
    from tests.faults import standin_engine
    from worker.job_runner import JobRunner

    monkeypatch.setenv("TOV_STANDIN_SECONDS", "0,0,0")
    model = service_dirs["models"] / "standin-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    pool, (validation, _) = setup_datasets(client, api_key)
    body = {"pool": pool, "validation": validation, "model": "standin-model"}
    job = client.post("/v1/jobs", json={**body, "selection": {"budget": 3}}, headers=auth(api_key))
    job_id = job.json()["id"]

    def engine_then_cancel(**kwargs: Any) -> Any:
        outcome = standin_engine.run_selection(**kwargs)
        with get_sessionmaker()() as session:  # the user's cancel, after the engine's last poll
            session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
            session.commit()
        return outcome

    monkeypatch.setattr(standin_engine, "engine_then_cancel", engine_then_cancel, raising=False)
    runner = JobRunner(job_id)
    runner.settings = get_settings().model_copy(
        update={"engine_entrypoint": "tests.faults.standin_engine:engine_then_cancel"}
    )
    runner.run()
    done = client.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
    assert done["status"] == "cancelled", done
    with get_sessionmaker()() as session:
        for table in (ScoreChunk, Selection):
            count = session.scalar(
                select(func.count()).select_from(table).where(table.job_id == job_id)
            )
            assert count == 0
