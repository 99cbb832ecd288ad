"""R3: Redis restarted mid-job; R4: Redis killed and its data wiped. All jobs finish, 0 lost.

R3: jobs run and wait in the queue; Redis is killed (kill -9) and restarted on the same AOF; two
more jobs are submitted while it is down (the API accepts them; they are published later by the
reaper). The re-publish delay is short (3 s) and the queue long: R3 also checks that no job merely
waiting in line is sent twice. R4: the same, but Redis comes back empty: every queued message is
gone, and the reaper re-publishes the queued jobs from Postgres (a job sent before one that a worker
already claimed lost its message; so did one still queued while no worker is busy). Every job's
result must equal its fault-free result, one visible result each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.harness import (
    Stack,
    chunks_consistent,
    job_request,
    pool_rows,
    reference,
    same_result,
)

pytestmark = pytest.mark.e2e

POOL_ROWS = 200


def redis_outage(make_stack: Callable[..., Stack], *, wipe: bool) -> dict[str, Any]:
    # A short re-publish delay: jobs merely waiting in line longer than that must not be re-sent.
    stack = make_stack(
        "r4" if wipe else "r3",
        TOV_STANDIN_SECONDS="1.0,1.0,0.4",
        TOV_REPUBLISH_SECONDS="3",
    )
    redis = stack.servers.redis
    stack.start_api()
    stack.start_worker("w1")
    stack.start_worker("w2")
    pool_id, pool_path = stack.dataset(pool_rows(POOL_ROWS), "pool.jsonl")
    val_id, val_path = stack.dataset(pool_rows(6, salt="target "), "val.jsonl")

    def body(i: int) -> dict[str, Any]:
        return {
            "pool": pool_id,
            "validation": val_id,
            "seed": 300 + i,
            "selection": {"budget": 30, "num_bins": 3},
        }

    jobs = [stack.submit(body(i)) for i in range(6)]  # two run, four wait in Redis
    deadline = time.monotonic() + 60
    running: set[str] = set()
    while len(running) < 2 and time.monotonic() < deadline:
        running |= {e["job"] for e in stack.trace.poll() if e["stage"] == "score"}
        time.sleep(0.05)
    assert len(running) == 2, stack.log_tails()
    redis.kill()
    if wipe:
        redis.wipe()
    started = time.monotonic()
    jobs += [stack.submit(body(i)) for i in range(6, 8)]  # accepted while the broker is down
    accept_seconds = time.monotonic() - started
    time.sleep(max(0.0, 2.0 - accept_seconds))
    redis.start()
    outage = time.monotonic() - started

    final = stack.wait_terminal(jobs, 90)
    report = {
        "jobs": len(jobs),
        "running_at_outage": len(running),
        "succeeded": sum(j.status == "succeeded" for j in final.values()),
        "lost": sum(j.status not in ("succeeded", "failed", "cancelled") for j in final.values()),
        "republished": sum(
            "republished" in [k for k, _ in stack.events(job_id)] for job_id in jobs
        ),
        "declined_duplicates": stack.log_tails(10**7).count("not claimable"),
        "outage_seconds": round(outage, 1),
        "submit_while_down_seconds": round(accept_seconds, 1),
    }
    print(f"\n{'R4' if wipe else 'R3'} report: {report}")
    bad = {j: (f.status, f.error) for j, f in final.items() if f.status != "succeeded"}
    assert not bad, (bad, report)
    for job_id in jobs:
        job = final[job_id]
        want = reference(pool_path, val_path, job_request(job))
        assert same_result(stack.results(job_id), want), job_id
        visible = stack.visible_results(job_id)
        assert visible["selections"] == 1 and chunks_consistent(visible["chunks"], POOL_ROWS)
        assert [k for k, _ in stack.events(job_id)].count("succeeded") == 1
    return report


def test_r3_redis_restarted_mid_job(make_stack: Callable[..., Stack]) -> None:
    report = redis_outage(make_stack, wipe=False)
    assert report["succeeded"] == report["jobs"] and report["lost"] == 0
    # The AOF kept the queued messages: only the two jobs accepted while Redis was down were sent
    # by the reaper; none of the jobs waiting in line was sent twice.
    assert report["republished"] == 2, report


def test_r4_redis_wiped_mid_job(make_stack: Callable[..., Stack]) -> None:
    report = redis_outage(make_stack, wipe=True)
    assert report["succeeded"] == report["jobs"] and report["lost"] == 0
    assert report["republished"] >= 4  # the queued messages were gone: Postgres re-sent them
