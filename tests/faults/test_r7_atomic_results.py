"""R7: reads during result commits never see a partial result.

Jobs on a pool of 66,000 rows (two score chunks) finish on two workers while client threads poll
GET /v1/jobs/{id}, /selection and /scores in a tight, bounded loop; two of them start hammering a
job as its engine enters the select stage, until it has succeeded, so their last reads race the
commit of the result. Every answer must be either
"not yet" (the job not succeeded; 409 problem+json for the downloads) or a complete result equal to
the fault-free one; and once a reader saw a job succeed it never sees "not yet" again.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.faults.harness import (
    Stack,
    TraceTail,
    job_request,
    parse_scores,
    parse_selection,
    pool_rows,
    reference,
    same_result,
)

pytestmark = pytest.mark.e2e

POOL_ROWS = 66_000  # > 65,536: the scores span two chunks
JOBS = 3
BUDGET = 500


def scores_from_parquet(data: bytes) -> list[tuple[int, float | None, int]]:
    table = pq.read_table(io.BytesIO(data)).to_pydict()
    return [
        (int(i), None if s is None or s != s else float(s), int(n))
        for i, s, n in zip(table["index"], table["score"], table["length"], strict=True)
    ]


class Reader(threading.Thread):
    """Polls every job's status, selection and scores until told to stop (bounded)."""

    def __init__(self, stack: Stack, jobs: list[str], want: dict[str, Any], stop: threading.Event):
        super().__init__(daemon=True)
        self.stack, self.jobs, self.want, self.stop_event = stack, jobs, want, stop
        self.counts = {
            "status": 0,
            "not_yet": 0,
            "racing": 0,
            "complete": 0,
            "partial": 0,
            "regressed": 0,
        }
        self.problems: list[str] = []
        self.seen_done: set[str] = set()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.stack.key}"}
        with httpx.Client(base_url=self.stack.api_url, headers=headers, timeout=60) as client:
            i = 0
            while not self.stop_event.is_set() and i < 3000:
                job_id = self.jobs[i % len(self.jobs)]
                i += 1
                try:
                    self.check(client, job_id, parquet=i % 3 == 0)
                except httpx.HTTPError as exc:
                    self.problems.append(f"{job_id}: {exc!r}")

    def _bad(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.problems.append(message)

    def check(self, client: httpx.Client, job_id: str, parquet: bool) -> None:
        job = client.get(f"/v1/jobs/{job_id}")
        self.counts["status"] += 1
        body = job.json()
        done = body["status"] == "succeeded"
        if done:
            progress = body["progress"]
            want_rows = POOL_ROWS - sum(s is None for _, s, _ in self.want[job_id]["scores"])
            if progress["fraction"] != 1.0 or progress["rows_done"] != want_rows:
                self._bad("partial", f"{job_id}: succeeded with progress {progress}")
        selection = client.get(f"/v1/jobs/{job_id}/selection")
        fmt = "parquet" if parquet else "jsonl"
        scores = client.get(f"/v1/jobs/{job_id}/scores", params={"format": fmt})
        for answer in (selection, scores):
            if answer.status_code == 409:
                if job_id in self.seen_done or done:
                    self._bad("regressed", f"{job_id}: 409 after success: {answer.text[:200]}")
                elif not answer.headers["content-type"].startswith("application/problem+json"):
                    self._bad("partial", f"{job_id}: 409 without a problem: {answer.text[:200]}")
                else:
                    self.counts["not_yet"] += 1
                continue
            if answer.status_code != 200:
                self._bad("partial", f"{job_id}: HTTP {answer.status_code} {answer.text[:200]}")
                continue
            want = self.want[job_id]
            if answer is selection:
                ok = same_result(
                    {"selection": parse_selection(answer.text), "scores": want["scores"]}, want
                )
            else:
                got = scores_from_parquet(answer.content) if parquet else parse_scores(answer.text)
                ok = same_result({"selection": want["selection"], "scores": got}, want)
            if ok:
                self.counts["complete"] += 1
                self.seen_done.add(job_id)
            else:
                self._bad("partial", f"{job_id}: a 200 that is not the complete result")
        if done:
            self.seen_done.add(job_id)


class HotReader(Reader):
    """Waits for a job's engine to enter its last stage (the trace's "start select"), then reads
    that job's status and selection back to back until it has succeeded: the last of these reads
    race the result commit itself."""

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.stack.key}"}
        trace = TraceTail(self.stack.trace.path)
        with httpx.Client(base_url=self.stack.api_url, headers=headers, timeout=60) as client:
            reads = 0
            while not self.stop_event.is_set() and reads < 20_000:
                finished = [
                    e["job"]
                    for e in trace.poll()
                    if (e["event"], e["stage"]) == ("start", "select")
                ]
                for job_id in finished:
                    deadline = time.monotonic() + 30
                    while job_id not in self.seen_done and time.monotonic() < deadline:
                        self.check_fast(client, job_id)
                        reads += 1
                    self.check(client, job_id, parquet=False)  # the complete result, once
                time.sleep(0.01)

    def check_fast(self, client: httpx.Client, job_id: str) -> None:
        body = client.get(f"/v1/jobs/{job_id}").json()
        self.counts["status"] += 1
        selection = client.get(f"/v1/jobs/{job_id}/selection")
        if selection.status_code == 409:
            if body["status"] == "succeeded":
                self._bad("regressed", f"{job_id}: 409 after the status said succeeded")
            else:
                self.counts["racing"] += 1
            return
        got = {"selection": parse_selection(selection.text), "scores": self.want[job_id]["scores"]}
        if selection.status_code == 200 and same_result(got, self.want[job_id]):
            self.counts["complete"] += 1
            self.seen_done.add(job_id)
        else:
            self._bad("partial", f"{job_id}: HTTP {selection.status_code}, not the whole result")


def test_r7_reads_during_commits_see_all_or_nothing(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("r7", TOV_STANDIN_SECONDS="0.6,0.6,0.3")
    stack.start_api()
    pool_id, pool_path = stack.dataset(pool_rows(POOL_ROWS), "pool.jsonl")
    val_id, val_path = stack.dataset(pool_rows(6, salt="target "), "val.jsonl")
    jobs = [
        stack.submit(
            {
                "pool": pool_id,
                "validation": val_id,
                "seed": 700 + i,
                "selection": {"budget": BUDGET, "num_bins": 5},
            }
        )
        for i in range(JOBS)
    ]
    rows = stack.jobs(jobs)
    want = {j: reference(pool_path, val_path, job_request(r)) for j, r in rows.items()}
    stop = threading.Event()
    readers = [Reader(stack, jobs, want, stop)] + [HotReader(stack, jobs, want, stop) for _ in "ab"]
    for reader in readers:
        reader.start()
    time.sleep(1.0)  # the readers see "not yet" first
    stack.start_worker("w1")
    stack.start_worker("w2")
    final = stack.wait_terminal(jobs, 180)
    time.sleep(2.0)  # and a while of complete results after
    stop.set()
    for reader in readers:
        reader.join(60)

    totals = {k: sum(r.counts[k] for r in readers) for k in readers[0].counts}
    print(f"\nR7 report: {totals}")
    problems = [p for r in readers for p in r.problems]
    assert all(j.status == "succeeded" for j in final.values()), stack.log_tails()
    assert not problems, problems[:5]
    assert totals["partial"] == 0 and totals["regressed"] == 0
    assert totals["not_yet"] > 0 and totals["complete"] > 0 and totals["racing"] > 0
