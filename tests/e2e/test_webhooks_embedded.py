"""Signed webhooks in the embedded mode: `tov-serve` on SQLite and kombu's `sqla+sqlite`
transport, the worker running the fault tests' stand-in engine (fast), the re-selection worker
sending the deliveries. A real local receiver verifies each request with `standardwebhooks`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import wait_for_job
from tests.e2e.test_embedded_mode import create_key, embedded_env, embedded_service
from tests.faults.harness import STANDIN, pool_rows, write_jsonl
from tests.webhook_receiver import running_receiver

pytestmark = pytest.mark.e2e


def test_the_embedded_service_signs_and_sends_job_and_selection_events(tmp_path: Path) -> None:
    state, data, models = tmp_path / "state", tmp_path / "data", tmp_path / "models"
    (models / "standin").mkdir(parents=True)
    (models / "standin" / "config.json").write_text("{}")
    data.mkdir()
    env = embedded_env(state, models, data)
    env.update(
        {
            "TOV_DEFAULT_MODEL": "standin",
            "TOV_ENGINE_ENTRYPOINT": STANDIN,
            "TOV_STANDIN_SECONDS": "0.2,0.2,0.1",
            "TOV_WEBHOOK_ALLOW_INSECURE": "true",  # the receiver is on 127.0.0.1, over http
            "TOV_REAPER_SECONDS": "1",
        }
    )
    pool = write_jsonl(data / "pool.jsonl", pool_rows(60))
    validation = write_jsonl(data / "val.jsonl", pool_rows(6, salt="target "))
    with running_receiver() as receiver, embedded_service(env, tmp_path / "service.log") as url:
        key = create_key(env)
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        hook = client.post("/v1/webhooks", json={"url": receiver.url("/hook")})
        assert hook.status_code == 201, hook.text
        receiver.secrets["/hook"] = hook.json()["secret"]
        body = {
            "pool": f"file://{pool}",
            "validation": f"file://{validation}",
            "selection": {"budget": 20},
        }
        created = client.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        job = wait_for_job(client, created.json()["id"], timeout=180)
        assert job["status"] == "succeeded", (tmp_path / "service.log").read_text()[-4000:]
        first = receiver.wait_for("/hook", 1, timeout=90)
        again = client.post(f"/v1/jobs/{job['id']}/selections", json={"budget": 5})
        assert again.status_code == 202, again.text
        got = receiver.wait_for("/hook", 2, timeout=90)
        deliveries = client.get(f"/v1/webhooks/{hook.json()['id']}/deliveries").json()["items"]
    assert first[0].verified and got[1].verified
    assert [r.payload["type"] for r in got if r.payload] == [
        "job.succeeded",
        "selection.succeeded",
    ]
    assert got[0].payload is not None and got[0].payload["data"]["job_id"] == job["id"]
    assert len({r.headers["webhook-id"] for r in got}) == 2
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert json.dumps(got[1].payload).count(again.json()["id"]) >= 1
