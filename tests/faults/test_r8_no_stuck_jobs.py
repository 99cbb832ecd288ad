"""R8: no job is stuck forever (issue 15, defect 3); each path reaches a terminal state.

Real API and Celery workers on our own PostgreSQL and Redis, the stand-in engine, short settings:
- a cancel requested while the job's worker is dead ends `cancelled` (it used to be re-queued,
  refused at every claim, and stay `queued` forever);
- a hung engine (no progress, the heartbeat still renewing the lease) is ended by the progress
  watchdog, retried up to the attempt cap, then `failed` (`stalled`);
- an attempt running past the maximum run time fails the job (`run_timeout`);
- a re-selection that fails with an unexpected error is capped (it used to be re-sent every
  minute forever) and ends `failed`.
Each test prints the seconds its job took to reach the terminal state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from tests.faults.harness import Stack, pool_rows

pytestmark = pytest.mark.e2e

BOUND = 90.0  # seconds: far above what each path needs; a stuck job never gets there


def _stack(make_stack: Callable[..., Stack], name: str, **settings: str) -> tuple[Stack, dict]:
    stack = make_stack(name, **settings)
    stack.start_api()
    stack.start_worker("w1")
    pool_id, _ = stack.dataset(pool_rows(60), "pool.jsonl")
    val_id, _ = stack.dataset(pool_rows(6, salt="target "), "val.jsonl")
    body = {"pool": pool_id, "validation": val_id, "selection": {"budget": 10, "num_bins": 2}}
    return stack, body


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _report(name: str, seconds: float) -> None:
    print(f"\nR8 {name}: terminal after {seconds:.1f} s")


def test_a_cancel_while_the_worker_is_dead_ends_cancelled(
    make_stack: Callable[..., Stack],
) -> None:
    stack, body = _stack(make_stack, "r8cancel", TOV_STANDIN_SECONDS="30,30,30")
    job_id = stack.submit(body)

    def engine_started() -> bool:
        stack.trace.poll()
        return any(e["job"] == job_id for e in stack.trace.events)

    _wait_for(engine_started, 60, "the engine to start")
    stack.kill_worker("w1")  # the worker dies; its lease is still valid for a few seconds
    cancel = stack.client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelling"  # running: the worker has to stop it
    started = time.monotonic()
    stack.start_worker("w2")  # its reaper finds the dead worker's expired lease
    jobs = stack.wait_terminal([job_id], BOUND)
    seconds = time.monotonic() - started
    assert jobs[job_id].status == "cancelled", (jobs[job_id].status, stack.events(job_id))
    _report("cancel with a dead worker", seconds)
    kinds = [kind for kind, _ in stack.events(job_id)]
    assert kinds[-1] == "cancelled" and "republished" not in kinds, kinds
    time.sleep(3)  # later sweeps leave it alone: no re-send, no new event
    assert [kind for kind, _ in stack.events(job_id)] == kinds
    active = stack.client.get("/v1/jobs", params={"status": "queued"}).json()["items"]
    assert active == []


def test_a_hung_engine_is_retried_then_failed(make_stack: Callable[..., Stack]) -> None:
    stack, body = _stack(
        make_stack,
        "r8hang",
        TOV_STANDIN_SECONDS="0.6,0.6,0.2",
        TOV_STANDIN_HANG="score",
        TOV_PROGRESS_TIMEOUT_SECONDS="2",
        TOV_MAX_ATTEMPTS="2",
    )
    started = time.monotonic()
    job_id = stack.submit(body)
    jobs = stack.wait_terminal([job_id], BOUND)
    seconds = time.monotonic() - started
    job = jobs[job_id]
    assert job.status == "failed", (job.status, stack.events(job_id))
    _report("hung engine (2 attempts)", seconds)
    assert job.error_code == "stalled" and job.attempt == 2, (job.error_code, job.error)
    assert "TOV_PROGRESS_TIMEOUT_SECONDS" in (job.error or "")
    events = stack.events(job_id)
    assert ("stalled", 1) in events and ("failed", 2) in events, events
    stack.trace.poll()
    hangs = [e for e in stack.trace.events if e["event"] == "hang"]
    assert len({e["pid"] for e in hangs}) == 2  # each attempt hung in its own process


def test_an_attempt_past_the_maximum_run_time_fails(make_stack: Callable[..., Stack]) -> None:
    stack, body = _stack(
        make_stack, "r8maxrun", TOV_STANDIN_SECONDS="30,30,30", TOV_MAX_RUN_SECONDS="3"
    )
    started = time.monotonic()
    job_id = stack.submit(body)
    jobs = stack.wait_terminal([job_id], BOUND)
    seconds = time.monotonic() - started
    job = jobs[job_id]
    assert job.status == "failed", (job.status, stack.events(job_id))
    _report("maximum run time", seconds)
    assert job.error_code == "run_timeout" and job.attempt == 1, (job.error_code, job.error)
    assert "TOV_MAX_RUN_SECONDS" in (job.error or "")


def test_a_failing_reselection_is_capped(make_stack: Callable[..., Stack]) -> None:
    from app.core.models import ScoreChunk

    stack, body = _stack(
        make_stack,
        "r8reselect",
        TOV_STANDIN_SECONDS="0.3,0.3,0.1",
        TOV_RESELECT_RESEND_SECONDS="1",
        TOV_RESELECT_MAX_ATTEMPTS="3",
    )
    job_id = stack.submit(body)
    assert stack.wait_terminal([job_id], BOUND)[job_id].status == "succeeded"
    with Session(stack.engine) as session:  # stored scores the selector cannot read
        session.execute(
            update(ScoreChunk).where(ScoreChunk.job_id == job_id).values(lengths=b"\x00")
        )
        session.commit()
    started = time.monotonic()
    asked = stack.client.post(f"/v1/jobs/{job_id}/selections", json={"budget": 5})
    assert asked.status_code == 202, asked.text
    url = f"/v1/jobs/{job_id}/selections/{asked.json()['id']}"

    def settled() -> dict[str, Any] | None:
        row: dict[str, Any] = stack.client.get(url).json()
        return row if row["status"] != "pending" else None

    row = _wait_for(settled, BOUND, "the re-selection to leave `pending`")
    _report("failing re-selection (3 attempts)", time.monotonic() - started)
    assert row["status"] == "failed", row
    assert "3 attempts" in (row.get("error") or ""), row
