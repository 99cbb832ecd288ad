"""Two-worker speedup of a staged ToV job, on the real service (PostgreSQL, Redis, Celery).

    python -m benchmarks.perf.scale_out            # make bench-scale-out

The same job (a small random-init Llama, a synthetic long-tailed pool, shards of --shard-rows
rows) runs twice on one API: first with one worker process, then with two. Each worker gets one
CPU thread (OMP_NUM_THREADS=1), standing in for one GPU each. The figure is the ratio of the
scoring stage's wall time (from the shards being recorded to the last one done: the part that
scales out; training runs on the job's own worker either way), measured in the same run; the
whole job's ratio is printed too. Writes benchmarks/results/scale_out.json, which bench_perf
copies into perf.json as `two_worker_speedup`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks.perf.workloads import build_small_lm, synthetic_rows, write_jsonl
from tests.e2e.processes import running_api, running_worker, wait_for_job

RESULTS = Path(__file__).resolve().parents[1] / "results"
ADMIN_DSN = os.environ.get("TOV_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TOV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _database() -> tuple[str, str]:
    name = f"tov_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    from app.migrate import upgrade_database

    upgrade_database(f"{base}/{name}")
    return name, f"{base}/{name}"


def _drop(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _key(env: dict[str, str]) -> str:
    os.environ.update(env)
    from app.core.auth import create_key
    from app.core.db import get_sessionmaker

    with get_sessionmaker()() as session:
        _, key = create_key(session=session, tenant_name="bench")
        session.commit()
    return key


def _run_job(
    client: httpx.Client, pool: Path, val_id: str, args: argparse.Namespace
) -> dict[str, Any]:
    body = {
        "pool": f"file://{pool}",
        "validation": val_id,
        "model": "bench-llama",
        "selection": {"budget": 0.05},
        "tov": {"rounds": 1, "base_size": 64, "learning_rate": 0.001, "batch_size": 8},
        "max_length": 256,
        "seed": 1,
    }
    started = time.monotonic()
    created = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": secrets.token_hex(8)})
    created.raise_for_status()
    job = wait_for_job(client, created.json()["id"], timeout=3600)
    if job["status"] != "succeeded":
        raise RuntimeError(f"benchmark job failed: {job}")
    job["wall_seconds"] = time.monotonic() - started
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=3000, help="pool rows")
    parser.add_argument("--shard-rows", type=int, default=150, help="rows a shard")
    args = parser.parse_args()
    name, url = _database()
    try:
        with tempfile.TemporaryDirectory(prefix="tov-scale-") as tmp_name:
            result = _measure(Path(tmp_name), url, args)
    finally:
        _drop(name)
    (RESULTS / "scale_out.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "jobs"}, indent=2))
    print(f"two-worker speedup of the scoring stage: {result['two_worker_speedup']:.2f}x")


def _measure(tmp: Path, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    models, data = tmp / "models", tmp / "data"
    data.mkdir()
    build_small_lm(models / "bench-llama", hidden=256, layers=4)
    pool = write_jsonl(data / "pool.jsonl", synthetic_rows(args.rows, seed=3))
    env = {
        "TOV_DATABASE_URL": database_url,
        "TOV_BROKER_URL": REDIS_URL,
        "TOV_TASK_QUEUE": f"tov_bench_{secrets.token_hex(4)}",
        "TOV_ARTIFACT_ROOT": str(tmp / "artifacts"),
        "TOV_SHARED_DATA_ROOTS": json.dumps([str(data)]),
        "TOV_MODEL_ROOTS": json.dumps([str(models)]),
        "TOV_SCORE_SHARD_ROWS": str(args.shard_rows),
        "TOV_MAX_SHARD_HELPERS": "1",
        "OMP_NUM_THREADS": "1",  # one core a worker: a stand-in for one GPU a worker
        "TOKENIZERS_PARALLELISM": "false",
        "TOV_LOG_LEVEL": "WARNING",
    }
    headers = {"Authorization": f"Bearer {_key(env)}"}
    load_before = os.getloadavg()
    with running_api(env, tmp) as api:
        client = httpx.Client(base_url=api, headers=headers, timeout=60)
        validation = "".join(json.dumps(r) + "\n" for r in synthetic_rows(16, seed=9)).encode()
        uploaded = client.post(
            "/v1/datasets?name=val.jsonl",
            content=validation,
            headers={"Content-Type": "application/x-ndjson"},
        )
        uploaded.raise_for_status()
        val_id = uploaded.json()["id"]
        with running_worker(env, tmp, "solo"):
            one = _run_job(client, pool, val_id, args)
        with running_worker(env, tmp, "w1"), running_worker(env, tmp, "w2"):
            two = _run_job(client, pool, val_id, args)
    score_one, score_two = one["stats"]["seconds_score_wall"], two["stats"]["seconds_score_wall"]
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "two_worker_speedup": round(score_one / score_two, 3),
        "job_wall_ratio": round(one["wall_seconds"] / two["wall_seconds"], 3),
        "scoring_seconds": {"one_worker": score_one, "two_workers": score_two},
        "shards": two["stats"]["shards"],
        "shards_by_worker": two["stats"]["shards_by_worker"],
        "pool_rows": args.rows,
        "shard_rows": args.shard_rows,
        "threads_per_worker": 1,
        "machine_cores": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "jobs": {"one_worker": one["stats"], "two_workers": two["stats"]},
    }


if __name__ == "__main__":
    main()
