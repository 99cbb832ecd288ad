"""R5: PostgreSQL restarted under API load: 0 HTTP 500; 503 problem+json with Retry-After while it
is down; healthy again within 10 s after it is back.

Two client threads poll GET /v1/jobs/{id} (authenticated: the API key check reads the database
too) and GET /readyz in a bounded loop, while our own PostgreSQL is stopped in `immediate` mode (a
crash: every connection dies, recovery at the next start), kept down, and started again. A job
runs on a worker across the outage and must still succeed, with its fault-free result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.faults.harness import Stack, job_request, pool_rows, reference, same_result

pytestmark = pytest.mark.e2e

DOWN_SECONDS = 4.0
AFTER_SECONDS = 12.0
RECOVERY_BOUND = 10.0  # RELIABILITY.md: healthy again <= 10 s after the database is back


@dataclass
class Answer:
    started: float
    ended: float
    path: str
    status: int  # 0: no HTTP answer (connection error, timeout)
    content_type: str = ""
    retry_after: str | None = None
    body: str = ""


def load(stack: Stack, job_id: str, stop: threading.Event, out: list[Answer]) -> None:
    paths = [f"/v1/jobs/{job_id}", "/readyz"]
    with httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=15
    ) as client:
        i = 0
        while not stop.is_set() and i < 20_000:  # bounded
            path = paths[i % 2]
            i += 1
            started = time.monotonic()
            try:
                r = client.get(path)
                out.append(
                    Answer(
                        started,
                        time.monotonic(),
                        path,
                        r.status_code,
                        r.headers.get("content-type", ""),
                        r.headers.get("retry-after"),
                        r.text[:300],
                    )
                )
            except httpx.HTTPError as exc:
                out.append(Answer(started, time.monotonic(), path, 0, body=repr(exc)))
            time.sleep(0.01)


def test_r5_postgres_restarted_under_load(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("r5", TOV_STANDIN_SECONDS="5,2,0.5", TOV_LEASE_SECONDS="5")
    pg = stack.servers.pg
    stack.start_api()
    stack.start_worker("w1")
    pool_id, pool_path = stack.dataset(pool_rows(200), "pool.jsonl")
    val_id, val_path = stack.dataset(pool_rows(6, salt="target "), "val.jsonl")
    job_id = stack.submit(
        {
            "pool": pool_id,
            "validation": val_id,
            "seed": 5,
            "selection": {"budget": 30, "num_bins": 3},
        }
    )
    deadline = time.monotonic() + 60
    while not any(e["job"] == job_id for e in stack.trace.poll()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the job runs: the outage will hit it in its train stage

    answers: list[Answer] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=load, args=(stack, job_id, stop, answers), daemon=True)
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)
        down_at = time.monotonic()
        pg.stop("immediate")
        time.sleep(DOWN_SECONDS)
        pg.start()  # returns once PostgreSQL accepts connections
        back_at = time.monotonic()
        time.sleep(AFTER_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    before = [a for a in answers if a.ended < down_at]
    during = [a for a in answers if down_at <= a.started and a.ended <= back_at]
    after = [a for a in answers if a.started >= back_at]
    codes = sorted({a.status for a in answers})
    # Healthy again: the first moment after which every request (both endpoints) answered 200.
    bad_after = [a for a in after if a.status != 200]
    healthy_at = max((a.ended for a in bad_after), default=back_at)
    report: dict[str, Any] = {
        "requests": len(answers),
        "codes": {c: sum(a.status == c for a in answers) for c in codes},
        "http_500": sum(a.status == 500 for a in answers),
        "503_while_down": sum(a.status == 503 for a in during),
        "recovered_after_s": round(healthy_at - back_at, 2),
        "slowest_request_s": round(max(a.ended - a.started for a in answers), 2),
    }
    print(f"\nR5 report: {report}")

    assert all(a.status == 200 for a in before), [a for a in before if a.status != 200][:3]
    assert report["http_500"] == 0, [a for a in answers if a.status == 500][:3]
    unexpected = [a for a in answers if a.status not in (200, 503)]
    assert not unexpected, unexpected[:5]  # no other error, no dropped connection
    for path in (f"/v1/jobs/{job_id}", "/readyz"):
        assert any(a.status == 503 and a.path == path for a in during), path
    for a in answers:
        if a.status != 503:
            continue
        assert a.retry_after is not None and int(a.retry_after) > 0, a
        if a.path == "/readyz":
            assert '"database":false' in a.body.replace(" ", ""), a
        else:
            assert a.content_type.startswith("application/problem+json"), a
            assert '"status":503' in a.body.replace(" ", ""), a
    assert after and report["recovered_after_s"] <= RECOVERY_BOUND, report
    assert len(after) - len(bad_after) > 10  # and it stayed healthy

    job = stack.wait_terminal([job_id], 60)[job_id]
    assert job.status == "succeeded", (job.status, job.error, stack.events(job_id))
    want = reference(pool_path, val_path, job_request(job))
    assert same_result(stack.results(job_id), want)
    assert [k for k, _ in stack.events(job_id)].count("succeeded") == 1
