"""Scale-out on real processes: one job's scoring shards split between two Celery workers, the
job's own worker killed mid-scoring and the job resumed, and every time the scores and selection
identical to the same job on one worker. Run against each kind of artifact store (a folder, and
a real S3 server: moto in server mode), with every process given its own local scratch folder,
so the workers share nothing but Postgres, Redis and the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.perf.workloads import build_small_lm, synthetic_rows
from tests.app.test_artifact_store import BUCKET, PREFIX, s3_server  # noqa: F401  (a fixture)
from tests.e2e.processes import running_api, running_worker, wait_for_job
from tests.service_fixtures import write_jsonl

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["folder", "s3"])
def store_env(request: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    """TOV_ARTIFACT_STORE and its settings: a shared folder, or the moto S3 server's bucket."""
    if request.param == "folder":
        yield {"TOV_ARTIFACT_STORE": str(tmp_path / "store")}
        return
    endpoint, _ = request.getfixturevalue("s3_server")
    yield {
        "TOV_ARTIFACT_STORE": f"s3://{BUCKET}/{PREFIX}/{tmp_path.name}",
        "TOV_ARTIFACT_S3_ENDPOINT_URL": endpoint,
        "TOV_ARTIFACT_S3_REGION": "us-east-1",
        "TOV_ARTIFACT_S3_ACCESS_KEY_ID": "testing",
        "TOV_ARTIFACT_S3_SECRET_ACCESS_KEY": "testing",
    }


def _own_scratch(env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    """A process's environment with its own local scratch folder (TOV_ARTIFACT_ROOT)."""
    return {**env, "TOV_ARTIFACT_ROOT": str(tmp_path / f"scratch-{name}")}


def _stored_files(env: dict[str, str], job_id: str, part: str) -> list[str]:
    """The store's objects under jobs/<job>/<part>, as the services' settings name the store."""
    from app.core.artifacts import artifact_store
    from app.core.config import Settings

    settings = Settings(
        **{
            k.removeprefix("TOV_").lower(): v
            for k, v in env.items()
            if k.startswith("TOV_ARTIFACT")
        }
    )
    return sorted(artifact_store(settings).sizes(f"jobs/{job_id}/{part}"))


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


def _wait_until_ready(logs: Path, *names: str, timeout: float = 180) -> None:
    """Until every named worker's log says it is ready to take tasks (Celery: "... ready.")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(" ready." in (logs / f"{n}.log").read_text(errors="replace") for n in names):
            return
        time.sleep(0.2)
    raise TimeoutError(f"workers {names} not ready in {timeout} s")


def test_two_workers_split_the_shards_and_select_the_same_rows(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    api_key: str,
    tmp_path: Path,
    store_env: dict[str, str],
) -> None:
    build_small_lm(service_dirs["models"] / "small-llama", hidden=256, layers=2)
    # 2,000 rows in 40-row shards: scoring outlasts the helper's start (~4 s) on a fast machine
    pool = write_jsonl(service_dirs["data"] / "scale_pool.jsonl", synthetic_rows(2000, seed=11))
    validation = "".join(json.dumps(r) + "\n" for r in synthetic_rows(8, seed=12)).encode()
    # One helper message a job: a leftover of the first job costs the second phase a pool child.
    env = {**service_env, **store_env, "TOV_SCORE_SHARD_ROWS": "40", "TOV_MAX_SHARD_HELPERS": "1"}
    headers = {"Authorization": f"Bearer {api_key}"}

    def worker(name: str) -> Any:
        return running_worker(_own_scratch(env, tmp_path, name), tmp_path, name)

    with running_api(_own_scratch(env, tmp_path, "api"), tmp_path) as url:
        client = httpx.Client(base_url=url, headers=headers, timeout=60)
        uploaded = client.post(
            "/v1/datasets?name=scale_val.jsonl",
            content=validation,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert uploaded.status_code == 201, uploaded.text
        val_id = uploaded.json()["id"]

        with worker("solo"):
            solo = wait_for_job(client, _submit(client, pool, val_id, "scale-1"), timeout=600)
        assert solo["status"] == "succeeded", (solo, (tmp_path / "solo.log").read_text()[-3000:])

        with worker("w1"), worker("w2"):
            _wait_until_ready(tmp_path, "w1", "w2")  # else one may score every shard alone
            pair = wait_for_job(client, _submit(client, pool, val_id, "scale-2"), timeout=600)
        logs = "".join((tmp_path / f"{n}.log").read_text()[-2000:] for n in ("w1", "w2"))
        assert pair["status"] == "succeeded", (pair, logs)

        # The job's own worker is killed (-9, whole process group) mid-scoring: the helper
        # finishes what it can, the reaper re-queues the job when its lease lapses, and the
        # next attempt resumes with the rounds trained and the shards scored.
        with worker("w3") as w3, worker("w4") as w4:
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

    # What the helpers used came through the store: every shard's scores and the trained rounds
    # are there, and each worker that scored a shard of the pair job holds the rounds in its
    # own scratch folder (the helper fetched them; nothing is shared on disk but the store).
    assert len(_stored_files(env, pair["id"], "shards")) == shards
    assert any(name.endswith("/done") for name in _stored_files(env, pair["id"], "rounds"))
    for name in ("w1", "w2"):
        rounds = tmp_path / f"scratch-{name}" / "jobs" / str(pair["id"]) / "rounds"
        assert list(rounds.rglob("done")), f"{name} scored shards without the trained rounds"
    assert not (tmp_path / "scratch-api" / "datasets").exists()  # uploads went to the store
