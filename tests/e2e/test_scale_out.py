"""Scale-out on real processes: one job's scoring shards split between two Celery workers, the
job's own worker killed mid-scoring and the job resumed, and every time the scores and selection
identical to the same job on one worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.perf.workloads import build_small_lm, synthetic_rows
from tests.e2e.processes import running_api, running_worker, wait_for_job
from tests.service_fixtures import write_jsonl

pytestmark = pytest.mark.e2e


def _submit(client: httpx.Client, pool: Path, validation_id: str, key: str) -> str:
    body = {
        "pool": f"file://{pool}",
        "validation": validation_id,
        "model": "small-llama",
        "selection": {"budget": 30, "num_bins": 3},
        "tov": {
            "rounds": 2,
            "base_size": 24,
            "learning_rate": 0.001,
            "batch_size": 8,
            "tokens_per_batch": 512,
        },
        "max_length": 96,
        "seed": 7,
    }
    created = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def _results(client: httpx.Client, job_id: str) -> tuple[list[object], list[object]]:
    def rows(path: str) -> list[object]:
        return [json.loads(line) for line in client.get(path).text.splitlines()]

    return rows(f"/v1/jobs/{job_id}/scores"), rows(f"/v1/jobs/{job_id}/selection")


def _kill_the_job_worker_mid_scoring(
    job_id: str, workers: dict[str, subprocess.Popen[bytes]], logs: Path
) -> str:
    """Wait until some but not all shards are done, then SIGKILL the worker running the job."""
    from sqlalchemy import select

    from app.core.db import get_sessionmaker
    from app.core.models import JobShard

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with get_sessionmaker()() as session:
            states = session.scalars(select(JobShard.status).where(JobShard.job_id == job_id)).all()
        done = sum(s == "done" for s in states)
        if states and 2 <= done <= len(states) - 4:
            break
        assert not states or done < len(states) - 3, "scoring ended before the kill"
        time.sleep(0.1)
    else:
        raise TimeoutError("the job's shards never started")
    owner = next(n for n in workers if "tov.run_job[" in (logs / f"{n}.log").read_text())
    os.killpg(workers[owner].pid, signal.SIGKILL)
    workers[owner].wait()
    return owner


def test_two_workers_split_the_shards_and_select_the_same_rows(
    service_env: dict[str, str], service_dirs: dict[str, Path], api_key: str, tmp_path: Path
) -> None:
    build_small_lm(service_dirs["models"] / "small-llama", hidden=256, layers=2)
    pool = write_jsonl(service_dirs["data"] / "scale_pool.jsonl", synthetic_rows(600, seed=11))
    validation = "".join(json.dumps(r) + "\n" for r in synthetic_rows(8, seed=12)).encode()
    # One helper message a job: a leftover of the first job costs the second phase a pool child.
    env = {**service_env, "TOV_SCORE_SHARD_ROWS": "40", "TOV_MAX_SHARD_HELPERS": "1"}
    headers = {"Authorization": f"Bearer {api_key}"}
    with running_api(env, tmp_path) as url:
        client = httpx.Client(base_url=url, headers=headers, timeout=60)
        uploaded = client.post(
            "/v1/datasets?name=scale_val.jsonl",
            content=validation,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert uploaded.status_code == 201, uploaded.text
        val_id = uploaded.json()["id"]

        with running_worker(env, tmp_path, "solo"):
            solo = wait_for_job(client, _submit(client, pool, val_id, "scale-1"), timeout=600)
        assert solo["status"] == "succeeded", (solo, (tmp_path / "solo.log").read_text()[-3000:])

        with running_worker(env, tmp_path, "w1"), running_worker(env, tmp_path, "w2"):
            pair = wait_for_job(client, _submit(client, pool, val_id, "scale-2"), timeout=600)
        logs = "".join((tmp_path / f"{n}.log").read_text()[-2000:] for n in ("w1", "w2"))
        assert pair["status"] == "succeeded", (pair, logs)

        # The job's own worker is killed (-9, whole process group) mid-scoring: the helper
        # finishes what it can, the reaper re-queues the job when its lease lapses, and the
        # next attempt resumes with the rounds trained and the shards scored.
        with running_worker(env, tmp_path, "w3") as w3, running_worker(env, tmp_path, "w4") as w4:
            killed_id = _submit(client, pool, val_id, "scale-3")
            victim = _kill_the_job_worker_mid_scoring(killed_id, {"w3": w3, "w4": w4}, tmp_path)
            resumed = wait_for_job(client, killed_id, timeout=600)
        logs = "".join((tmp_path / f"{n}.log").read_text()[-3000:] for n in ("w3", "w4"))
        assert resumed["status"] == "succeeded", (resumed, victim, logs)
        assert resumed["attempt"] == 2, resumed
        events = [e["kind"] for e in client.get(f"/v1/jobs/{killed_id}/events").json()]
        assert "republished" in events, events

        solo_results, pair_results = _results(client, solo["id"]), _results(client, pair["id"])
        killed_results = _results(client, killed_id)

    stats = pair["stats"]
    assert isinstance(stats, dict)
    shards = stats["shards"]
    split = stats["shards_by_worker"]
    assert shards >= 10 and sum(split.values()) == shards
    assert len(split) == 2 and min(split.values()) >= 1, split  # both workers scored shards
    assert len(solo["stats"]["shards_by_worker"]) == 1  # type: ignore[index]
    assert pair_results == solo_results  # every score and the selection, bit for bit
    assert killed_results == solo_results
    assert len(pair_results[1]) == 30
