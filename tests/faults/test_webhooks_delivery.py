"""Signed webhooks through the real service: the API, two Celery workers (their reapers ask for
delivery runs, the select queue runs them) and a real local receiver that verifies every request
with `standardwebhooks`. A receiver that is down at first gets each event later, once; a worker
killed with SIGKILL mid-job still yields exactly one terminal event."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.models import WebhookEvent
from tests.faults.harness import Stack, pool_rows
from tests.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.e2e

FAST_RETRIES = json.dumps([0] + [1] * 40)  # the back-off schedule, in seconds, for the test
JOB_EVENT_TYPES = ("job.succeeded", "job.failed", "job.cancelled")


def _stack(make_stack: Callable[..., Stack], name: str, seconds: str) -> Stack:
    stack = make_stack(
        name,
        TOV_STANDIN_SECONDS=seconds,
        TOV_WEBHOOK_ALLOW_INSECURE="true",  # the receiver listens on 127.0.0.1, over http
        TOV_WEBHOOK_RETRY_SCHEDULE=FAST_RETRIES,
    )
    stack.start_api()
    return stack


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(check: Callable[[], Any], what: str, stack: Stack, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{stack.log_tails()}")


def _job_body(stack: Stack, **extra: Any) -> dict[str, Any]:
    pool_id, _ = stack.dataset(pool_rows(120), "pool.jsonl")
    val_id, _ = stack.dataset(pool_rows(8, salt="target "), "val.jsonl")
    return {"pool": pool_id, "validation": val_id, "selection": {"budget": 30}, **extra}


def _deliveries(stack: Stack, webhook_id: str) -> list[dict[str, Any]]:
    answer = stack.client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def _events_of(stack: Stack, job_id: str) -> list[str]:
    with Session(stack.engine) as session:
        return list(
            session.scalars(
                select(WebhookEvent.type)
                .where(WebhookEvent.job_id == job_id)
                .order_by(WebhookEvent.created_at)
            )
        )


def test_a_receiver_down_at_first_gets_every_event_later_exactly_once(
    make_stack: Callable[..., Stack],
) -> None:
    stack = _stack(make_stack, "webhooks", "0.3,0.3,0.1")
    for name in ("w1", "w2"):  # two reapers asking for runs, two senders: still once each
        stack.start_worker(name)
    port = _closed_port()
    tenant_hook = stack.client.post(
        "/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/tenant"}
    ).json()
    with running_receiver() as live:
        answer = stack.client.post(
            "/v1/jobs", json=_job_body(stack, notify_url=live.url("/notify"))
        )
        assert answer.status_code == 202, answer.text
        job = answer.json()
        live.secrets["/notify"] = job["notify"]["secret"]
        first = live.wait_for("/notify", 1)
        assert first[0].verified and first[0].payload is not None
        assert first[0].payload["type"] == "job.succeeded"
        assert first[0].payload["data"]["job_id"] == job["id"]
        reselect = stack.client.post(
            f"/v1/jobs/{job['id']}/selections", json={"budget": 10, "num_bins": 2}
        )
        assert reselect.status_code == 202, reselect.text
        second = live.wait_for("/notify", 2)
        assert second[1].verified and second[1].payload is not None
        assert second[1].payload["type"] == "selection.succeeded"
        assert second[1].payload["data"]["selection_id"] == reselect.json()["id"]

        def retried() -> bool:
            rows = _deliveries(stack, tenant_hook["id"])
            return len(rows) == 2 and all(r["attempts"] >= 2 for r in rows)

        _until(retried, "two failed attempts at the tenant endpoint", stack)
        down = _deliveries(stack, tenant_hook["id"])
        assert {r["status"] for r in down} == {"pending"}
        assert all("ConnectError" in (r["last_error"] or "") for r in down)

        with running_receiver(port, Receiver(port=port)) as late:
            late.secrets["/tenant"] = tenant_hook["secret"]
            got = late.wait_for("/tenant", 2)
            time.sleep(4)  # several more sweeps of both workers: nothing is sent again
            got = late.got("/tenant")
        ids = [r.headers["webhook-id"] for r in got]
        assert len(ids) == 2 and len(set(ids)) == 2, ids
        assert all(r.verified for r in got)
        assert sorted(r.payload["type"] for r in got if r.payload) == [
            "job.succeeded",
            "selection.succeeded",
        ]
        assert sorted(live.event_ids("/notify")) == sorted(ids)  # the same events, once each
    delivered = _deliveries(stack, tenant_hook["id"])
    assert {r["status"] for r in delivered} == {"delivered"}
    assert all(r["attempt_log"][-1]["status_code"] == 204 for r in delivered)
    assert all(r["attempt_log"][0]["status_code"] is None for r in delivered)


def test_a_worker_killed_mid_job_yields_exactly_one_terminal_event(
    make_stack: Callable[..., Stack],
) -> None:
    stack = _stack(make_stack, "webhook-kill", "3,0.6,0.2")
    stack.start_worker("w1")
    with running_receiver() as receiver:
        hook = stack.client.post("/v1/webhooks", json={"url": receiver.url("/hook")}).json()
        receiver.secrets["/hook"] = hook["secret"]
        job_id = stack.submit(_job_body(stack))

        def training() -> bool:
            return any(
                e["job"] == job_id and e["stage"] == "train" and e["event"] == "step"
                for e in stack.trace.poll() + stack.trace.events
            )

        _until(training, "the job's first training step", stack)
        stack.restart_worker("w1")  # kill -9 the whole worker mid-training, start a fresh one
        jobs = _until(
            lambda: (
                (j := stack.wait_terminal([job_id], 0)) and j[job_id].status == "succeeded" and j
            ),
            "the job to succeed on a later attempt",
            stack,
            timeout=120,
        )
        assert jobs[job_id].attempt >= 2  # the kill landed: a second attempt finished the job
        got = receiver.wait_for("/hook", 1)
        time.sleep(4)  # more sweeps: no second terminal event is sent
        got = receiver.got("/hook")
    assert len(got) == 1 and got[0].verified and got[0].payload is not None
    assert got[0].payload["type"] == "job.succeeded"
    assert got[0].payload["data"]["attempt"] == jobs[job_id].attempt
    assert [t for t in _events_of(stack, job_id) if t in JOB_EVENT_TYPES] == ["job.succeeded"]
