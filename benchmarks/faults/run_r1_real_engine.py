"""R1 with the REAL engine: kill -9 the worker in the train and score stages of real ToV jobs.

A tiny Llama (tests/tiny_models.py) runs real ToV jobs (2 rounds, LoRA) on CPU through the whole
service: API (uvicorn) and a Celery worker on a PostgreSQL cluster and a Redis of their own
(tests/faults/servers.py; never the shared ones). Each job is run twice: once without faults (the
reference) and once with a kill -9 landing at a random moment of its train or score stage (the
Celery child; every third kill takes the whole worker, which is then restarted). Recovery comes
from the lease and the reaper; the resumed job must give the reference's selection and scores.

    .venv/bin/python -m benchmarks.faults.run_r1_real_engine [--jobs 4] [--seed N] [--keep]

Prints a table and writes benchmarks/results/faults_r1_real_engine.json. Exit status 1 when a job
did not succeed or differs from its fault-free run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result
from tests.faults.harness import Servers, Stack, chunks_consistent, same_result
from tests.faults.servers import PgCluster, RedisServer, scratch_dir

console = Console(width=150)

TARGET = [
    {"prompt": f"What is {a} plus {b}?", "completion": f"{a} plus {b} is {a + b}."}
    for a, b in [(2, 3), (4, 1), (7, 5), (6, 2), (9, 3), (8, 8), (1, 1), (5, 4)]
]
OTHER = [
    {"prompt": f"Name a colour of the {thing}.", "completion": f"The {thing} is {colour}."}
    for thing, colour in [
        ("sky", "blue"),
        ("grass", "green"),
        ("sun", "yellow"),
        ("snow", "white"),
        ("coal", "black"),
        ("rose", "red"),
    ]
] * 4
STAGES = ("train", "score")


def job_body(pool: str, validation: str, i: int) -> dict[str, Any]:
    return {
        "pool": pool,
        "validation": validation,
        "model": "tiny-llama",
        "selection": {"budget": 10, "strategy": "score+random", "num_bins": 2},
        "tov": {"rounds": 2, "base_size": 4, "learning_rate": 0.01, "batch_size": 4},
        "max_length": 64,
        "seed": 20 + i,
    }


def wait_stage(stack: Stack, job_id: str, stage: str, timeout: float) -> bool:
    """Until the job's first attempt reports `stage` (progress rows are written about 1/s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stack.jobs([job_id])[job_id]
        if job.status in ("succeeded", "failed", "cancelled"):
            return False
        if job.attempt == 1 and job.stage == stage:
            return True
        time.sleep(0.1)
    return False


def run(n_jobs: int, seed: int, keep: bool) -> dict[str, Any]:
    from tests.tiny_models import build_tiny_causal_lm

    rng = random.Random(seed)
    root = scratch_dir("tov-bench-faults-")
    pg, redis = PgCluster(root), RedisServer(root)
    stack: Stack | None = None
    try:
        pg.init()
        pg.start()
        pg.create_database("tov_faults_template")
        from app.migrate import upgrade_database

        upgrade_database(pg.url("tov_faults_template"))
        redis.start()
        stack = Stack(
            Servers(pg, redis, "tov_faults_template"),
            root / "stack",
            "r1real",
            TOV_ENGINE_ENTRYPOINT="tov_engine:run_selection",
            TOV_DEFAULT_MODEL="tiny-llama",
            TOV_LEASE_SECONDS="6",
            TOV_HEARTBEAT_SECONDS="1",
        )
        build_tiny_causal_lm(stack.root / "models" / "tiny-llama")
        stack.start_api()
        stack.start_worker("w1")
        pool_id, _ = stack.dataset(OTHER + TARGET * 2, "pool.jsonl")
        val_id, _ = stack.dataset(TARGET[:4], "val.jsonl")

        # 1. Fault-free references, through the same service.
        started = time.monotonic()
        refs = [stack.submit(job_body(pool_id, val_id, i), key=f"ref-{i}") for i in range(n_jobs)]
        ref_jobs = stack.wait_terminal(refs, 300 + 120 * n_jobs)
        fault_free_seconds = time.monotonic() - started
        assert all(j.status == "succeeded" for j in ref_jobs.values()), stack.log_tails()
        reference = {r: stack.results(r) for r in refs}

        # 2. The same jobs, one at a time, each killed once in its train or score stage.
        rows: list[dict[str, Any]] = []
        for i in range(n_jobs):
            stage = STAGES[i % 2]
            whole = i % 3 == 2
            job_id = stack.submit(job_body(pool_id, val_id, i), key=f"kill-{i}")
            row: dict[str, Any] = {
                "job": i,
                "stage": stage,
                "victim": "worker" if whole else "child",
                "killed": False,
            }
            if wait_stage(stack, job_id, stage, 300):
                time.sleep(rng.uniform(0.0, 1.0))
                landed = stack.jobs([job_id])[job_id].stage
                children = stack.worker_children("w1")
                if landed == stage and children:
                    killed_at = time.monotonic()
                    if whole:
                        stack.restart_worker("w1")
                    else:
                        stack.kill_child(children[0])
                    row.update(killed=True, landed_in=landed)
            job = stack.wait_terminal([job_id], 300)[job_id]
            row["status"] = job.status
            row["attempts"] = job.attempt
            if row["killed"]:
                row["recovery_s"] = round(time.monotonic() - killed_at, 1)
            if job.status == "succeeded":
                got = stack.results(job_id)
                row["identical"] = same_result(got, reference[refs[i]])
                visible = stack.visible_results(job_id)
                row["one_result"] = visible["selections"] == 1 and chunks_consistent(
                    visible["chunks"], len(got["scores"])
                )
            rows.append(row)
            console.print(row)

        summary = {
            "jobs": n_jobs,
            "kills": sum(r["killed"] for r in rows),
            "kills_by_stage": {
                s: sum(r["killed"] and r["stage"] == s for r in rows) for s in STAGES
            },
            "whole_worker_kills": sum(r["killed"] and r["victim"] == "worker" for r in rows),
            "succeeded": sum(r["status"] == "succeeded" for r in rows),
            "identical_to_fault_free": sum(bool(r.get("identical")) for r in rows),
            "one_visible_result": sum(bool(r.get("one_result")) for r in rows),
            "lost": sum(r["status"] not in ("succeeded", "failed", "cancelled") for r in rows),
            "fault_free_seconds": round(fault_free_seconds, 1),
            "seed": seed,
        }
        return {"summary": summary, "jobs": rows}
    finally:
        if stack is not None:
            stack.stop()
        redis.stop()
        pg.stop("fast")
        if keep:
            console.print(f"files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the servers' files")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    result = run(args.jobs, seed, args.keep)
    s = result["summary"]
    table = Table(title=f"R1 with the real engine (tiny Llama, CPU), seed {seed}")
    for column in (
        "jobs",
        "kills (train/score)",
        "whole-worker kills",
        "succeeded",
        "identical to fault-free",
        "one visible result",
        "lost",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        str(s["jobs"]),
        f"{s['kills']} ({s['kills_by_stage']['train']}/{s['kills_by_stage']['score']})",
        str(s["whole_worker_kills"]),
        f"{s['succeeded']}/{s['jobs']}",
        f"{s['identical_to_fault_free']}/{s['jobs']}",
        f"{s['one_visible_result']}/{s['jobs']}",
        str(s["lost"]),
    )
    console.print(table)
    path = write_result("faults_r1_real_engine", result)
    console.print(f"written to {path}")
    ok = s["succeeded"] == s["jobs"] == s["identical_to_fault_free"] and s["kills"] == s["jobs"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
