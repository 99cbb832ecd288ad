"""R2: the same task delivered twice: exactly one attempt commits results.

1. Simultaneous duplicates: the job's message plus two more copies (send_task with the same job id)
   wait in the queue; two workers start together and race for it; more copies arrive during the
   run and after it. One claim wins; the others die at the claim.
2. A zombie (celery#5935: a redelivery while the first run still lives): the first attempt's process
   is frozen (SIGSTOP) until its lease expires; the reaper re-sends; a second worker claims attempt
   2. The zombie is then thawed, once while attempt 2 runs and once after attempt 2 committed, right
   before its own commit. It must write nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from app.core.config import Settings
from app.core.queue import RUN_JOB_TASK, celery_config
from tests.faults.harness import Stack, job_request, pool_rows, reference, same_result

pytestmark = pytest.mark.e2e


def producer(stack: Stack) -> Celery:
    app = Celery("faults-producer")
    app.conf.update(
        celery_config(
            Settings(broker_url=stack.env["TOV_BROKER_URL"], task_queue=stack.env["TOV_TASK_QUEUE"])
        )
    )
    return app


def send_duplicate(app: Celery, stack: Stack, job_id: str) -> None:
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=stack.env["TOV_TASK_QUEUE"])


def engine_runs(stack: Stack, job_id: str) -> list[int]:
    """PIDs that started the engine for the job (one 'start train' trace line per run)."""
    stack.trace.poll()
    return [
        e["pid"]
        for e in stack.trace.events
        if e["job"] == job_id and e["event"] == "start" and e["stage"] == "train"
    ]


def assert_one_commit(stack: Stack, job_id: str, attempt: int, want: dict[str, Any]) -> None:
    job = stack.jobs([job_id])[job_id]
    events = stack.events(job_id)
    assert job.status == "succeeded" and job.attempt == attempt, (job.status, job.attempt, events)
    succeeded = [a for kind, a in events if kind == "succeeded"]
    assert succeeded == [attempt], events  # exactly one attempt committed, the current one
    assert [a for kind, a in events if kind == "claimed"] == list(range(1, attempt + 1)), events
    visible = stack.visible_results(job_id)
    assert visible["selections"] == 1 and visible["defaults"] == 1, visible
    assert same_result(stack.results(job_id), want)


def test_r2_simultaneous_duplicates(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("r2dup", TOV_STANDIN_SECONDS="1.0,1.0,0.4")
    stack.start_api()
    pool_id, pool_path = stack.dataset(pool_rows(200), "pool.jsonl")
    val_id, val_path = stack.dataset(pool_rows(6, salt="target "), "val.jsonl")
    job_id = stack.submit(
        {
            "pool": pool_id,
            "validation": val_id,
            "seed": 7,
            "selection": {"budget": 30, "num_bins": 3},
        }
    )
    app = producer(stack)
    for _ in range(2):
        send_duplicate(app, stack, job_id)  # three copies of the message wait in the queue
    stack.start_worker("w1")
    stack.start_worker("w2")
    deadline = time.monotonic() + 60
    while not engine_runs(stack, job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    send_duplicate(app, stack, job_id)  # one more while it runs
    job = stack.wait_terminal([job_id], 60)[job_id]
    assert job.status == "succeeded", stack.log_tails()
    send_duplicate(app, stack, job_id)  # and one after it finished
    time.sleep(3)  # let the late copies reach the workers and die at the claim

    want = reference(pool_path, val_path, job_request(job))
    assert_one_commit(stack, job_id, 1, want)
    assert len(engine_runs(stack, job_id)) == 1  # the duplicates never reached the engine
    logs = stack.log_tails(200_000)
    declined = logs.count(f"job {job_id}: not claimable")
    report = {"deliveries": 5, "engine_runs": 1, "declined_at_claim": declined, "commits": 1}
    print(f"\nR2 duplicates report: {report}")
    assert declined >= 3  # 2 queued copies + the one sent during the run (the last may lag)


def test_r2_zombie_attempt_commits_nothing(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("r2zombie", TOV_STANDIN_SECONDS="1.5,1.5,1.0", TOV_LEASE_SECONDS="3")
    stack.start_api()
    stack.start_worker("w1")
    stack.start_worker("w2")
    pool_id, pool_path = stack.dataset(pool_rows(200), "pool.jsonl")
    val_id, val_path = stack.dataset(pool_rows(6, salt="target "), "val.jsonl")

    # Thaw (a) while attempt 2 runs, in score; (b) after attempt 2 committed, just before publish.
    cases = {"during": ("score", 1), "after": ("select", 1)}
    jobs: dict[str, str] = {}
    for case, (stage, step) in cases.items():
        job_id = stack.submit(
            {
                "pool": pool_id,
                "validation": val_id,
                "seed": len(jobs) + 11,
                "selection": {"budget": 30, "num_bins": 3},
            }
        )
        jobs[case] = job_id
        zombie = wait_for_step(stack, job_id, stage, step)
        os.kill(zombie, signal.SIGSTOP)
        try:
            # The lease expires, the reaper re-sends, the other worker claims attempt 2.
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                runs = engine_runs(stack, job_id)
                if len(runs) >= 2:
                    break
                time.sleep(0.1)
            assert len(engine_runs(stack, job_id)) >= 2, stack.log_tails()
            if case == "after":
                assert stack.wait_terminal([job_id], 40)[job_id].status == "succeeded"
        finally:
            os.kill(zombie, signal.SIGCONT)
        # The zombie goes on, notices it lost the lease, and stops without writing.
        deadline = time.monotonic() + 30
        while stack.worker_named(zombie) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stack.worker_named(zombie) is None, "the zombie attempt did not stop"

    stack.wait_terminal(list(jobs.values()), 60)
    logs = stack.log_tails(200_000)
    for case, job_id in jobs.items():
        job = stack.jobs([job_id])[job_id]
        want = reference(pool_path, val_path, job_request(job))
        assert_one_commit(stack, job_id, 2, want)
        assert f"job {job_id} attempt 1 stopped: lease lost" in logs, case
    report = {"zombies_thawed": len(jobs), "zombie_commits": 0, "commits_per_job": 1}
    print(f"\nR2 zombies report: {report}")


def wait_for_step(stack: Stack, job_id: str, stage: str, step: int, timeout: float = 60) -> int:
    """The PID of the process that just began `step` of `stage` for the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in stack.trace.poll():
            if (event["job"], event["event"], event["stage"], event["step"]) == (
                job_id,
                "step",
                stage,
                step,
            ):
                assert stack.worker_named(event["pid"]) is not None
                return int(event["pid"])
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} never reached {stage} step {step}\n{stack.log_tails()}")
