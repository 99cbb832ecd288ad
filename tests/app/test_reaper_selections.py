"""The reaper re-sends a lost re-selection once a minute, not at every sweep."""

from __future__ import annotations

import json
from datetime import timedelta

import redis

from tests.service_fixtures import REDIS_URL, make_key


def test_a_pending_selection_is_resent_once_a_minute(service_env: dict[str, str]) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.core.db import get_sessionmaker
    from app.core.models import Job, Selection, utcnow
    from app.main import create_app
    from worker.reaper import reap_once

    key = make_key("tenant-reaper-selections")
    auth = {"Authorization": f"Bearer {key}"}
    rows = "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(6)).encode()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        headers = {**auth, "Content-Type": "application/x-ndjson"}
        pool = client.post("/v1/datasets?name=p.jsonl", content=rows, headers=headers).json()
        job = client.post(
            "/v1/jobs", json={"pool": pool["id"], "validation": pool["id"]}, headers=auth
        ).json()
    settings = get_settings()
    queue = redis.Redis.from_url(REDIS_URL)
    queue.delete(settings.select_queue)
    with get_sessionmaker()() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.status = "succeeded"  # not re-sent by the reaper as a job
        lost = Selection(
            job_id=row.id,
            budget=2,
            strategy="score-only",
            num_bins=1,
            seed=0,
            size=0,
            indices=b"",
            scores=b"",
            from_random=b"",
            status="pending",
            created_at=utcnow() - timedelta(minutes=5),
            published_at=utcnow() - timedelta(minutes=5),
        )
        fresh = Selection(**{c: getattr(lost, c) for c in ("job_id", "budget", "strategy")})
        fresh.num_bins, fresh.seed, fresh.size, fresh.status = 1, 0, 0, "pending"
        fresh.indices = fresh.scores = fresh.from_random = b""
        fresh.created_at = fresh.published_at = utcnow()  # just sent: not lost
        session.add_all([lost, fresh])
        session.commit()
        lost_id = lost.id

        first = reap_once(session, settings)
        second = reap_once(session, settings)  # the next sweep, seconds later

        session.expire_all()
        published = session.get(Selection, lost_id)
        assert published is not None and published.published_at is not None
        assert utcnow() - published.published_at < timedelta(seconds=30)
    assert first["selections"] == 1 and second["selections"] == 0
    sent = [json.loads(m) for m in queue.lrange(settings.select_queue, 0, -1)]
    assert len(sent) == 1
    queue.delete(settings.select_queue)
