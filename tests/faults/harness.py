"""The service under fault: a real API (uvicorn) and real Celery workers on our own servers.

A Stack belongs to one test: its own database (a copy of a migrated template), its own queue, its
own artifact folder, its own trace file. Processes are started in their own session (process group)
and stopped or killed by PID; nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from app.core.models import Job, JobEvent, ScoreChunk, Selection
from app.launcher import api_command, worker_command
from tests.faults.servers import PgCluster, RedisServer

REPO = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")
STANDIN = "tests.faults.standin_engine:run_selection"

TOPICS = ["arithmetic", "geography", "cooking", "poetry", "physics", "history", "music", "code"]


def pool_rows(n: int, salt: str = "") -> list[dict[str, str]]:
    """Prompt/completion rows of varied lengths (so the length bins differ)."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        words = " ".join(f"w{(i * 7 + j) % 97}" for j in range(3 + (i * 13) % 29))
        rows.append(
            {
                "prompt": f"{salt}Question {i} on {topic}: {words}?",
                "completion": f"Answer {i} about {topic}.",
            }
        )
    return rows


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


@dataclass
class Servers:
    pg: PgCluster
    redis: RedisServer
    template: str  # a migrated database that each test copies


@dataclass
class TraceTail:
    """Reads the stand-in engine's trace file incrementally."""

    path: Path
    offset: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        new = [json.loads(line) for line in data[:cut].splitlines() if line.strip()]
        self.events.extend(new)
        return new


class Stack:
    def __init__(self, servers: Servers, root: Path, name: str, **settings: str) -> None:
        self.servers, self.root, self.name = servers, root, name
        self.logs = root / "logs"
        for sub in ("logs", "data", "artifacts", "models/standin"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "models/standin/config.json").write_text("{}")
        self.database = f"tov_faults_{name}_{secrets.token_hex(3)}"
        self.db_url = servers.pg.create_database(self.database, template=servers.template)
        self.trace = TraceTail(root / "trace.jsonl")
        self.env = {
            "TOV_DATABASE_URL": self.db_url,
            "TOV_BROKER_URL": servers.redis.url,
            "TOV_TASK_QUEUE": f"tov_faults_{name}_{secrets.token_hex(3)}",
            "TOV_ARTIFACT_ROOT": str(root / "artifacts"),
            "TOV_SHARED_DATA_ROOTS": json.dumps([str(root / "data")]),
            "TOV_MODEL_ROOTS": json.dumps([str(root / "models")]),
            "TOV_DEFAULT_MODEL": "standin",
            "TOV_ENGINE_ENTRYPOINT": STANDIN,
            "TOV_HEARTBEAT_SECONDS": "0.5",
            "TOV_LEASE_SECONDS": "4",
            "TOV_REAPER_SECONDS": "1",
            "TOV_REPUBLISH_SECONDS": "10",
            "TOV_STANDIN_TRACE": str(self.trace.path),
            "TOV_LOG_LEVEL": "INFO",
            **settings,
        }
        self.api: subprocess.Popen[bytes] | None = None
        self.api_url = ""
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = 0
        self.engine: Engine = create_engine(self.db_url, poolclass=NullPool)
        self.key = self._make_key()
        self._client: httpx.Client | None = None

    # ---- processes -------------------------------------------------------------------------
    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOV_")}
        env.update(self.env)
        log = (self.logs / f"{self.starts:02d}-{log_name}.log").open("wb")
        return subprocess.Popen(
            command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_api(self) -> str:
        port = _free_port()
        self.api = self._spawn(api_command("127.0.0.1", port), "api")
        self.api_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200:
                    return self.api_url
            except httpx.HTTPError:
                pass
            assert self.api.poll() is None, self.log_tails()
            time.sleep(0.2)
        raise TimeoutError("the API did not come up")

    def start_worker(self, name: str = "w1") -> subprocess.Popen[bytes]:
        queue = self.env["TOV_TASK_QUEUE"]
        command = [
            *worker_command(1, [queue, f"{queue}.select"]),
            "--hostname",
            f"{name}-{secrets.token_hex(3)}@faults",
        ]
        process = self._spawn(command, f"worker-{name}")
        self.workers[name] = process
        return process

    def kill_worker(self, name: str) -> None:
        """kill -9 the whole worker: its main process and its children (one process group)."""
        process = self.workers[name]
        kill_group(process.pid)
        process.wait(20)

    def restart_worker(self, name: str) -> subprocess.Popen[bytes]:
        self.kill_worker(name)
        return self.start_worker(name)

    def worker_named(self, pid: int) -> str | None:
        """Which of our workers `pid` belongs to (its process group is the worker's)."""
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return None
        for name, process in self.workers.items():
            if process.pid == group and process.poll() is None:
                return name
        return None

    def kill_child(self, pid: int) -> bool:
        """kill -9 one Celery child of ours (checked: it belongs to one of our workers)."""
        if self.worker_named(pid) is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def worker_children(self, name: str) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(self.workers[name].pid).children()]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        for process in [*self.workers.values(), *([self.api] if self.api else [])]:
            if process.poll() is None:
                kill_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in [*self.workers.values(), *([self.api] if self.api else [])]:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_group(process.pid)
                process.wait(10)
        self.engine.dispose()

    def log_tails(self, chars: int = 2500) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"==== {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    # ---- API -------------------------------------------------------------------------------
    def _make_key(self) -> str:
        from app.core.auth import create_key

        with Session(self.engine) as session:
            _, key = create_key(session=session, tenant_name=f"faults-{self.name}")
            session.commit()
        return key

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.api_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
            )
        return self._client

    def dataset(self, rows: list[dict[str, Any]], name: str) -> tuple[str, Path]:
        path = write_jsonl(self.root / "data" / name, rows)
        response = self.client.post("/v1/datasets", json={"uri": f"file://{path}"})
        assert response.status_code == 201, response.text
        return response.json()["id"], path

    def submit(self, body: dict[str, Any], key: str | None = None) -> str:
        headers = {"Idempotency-Key": key or secrets.token_hex(8)}
        response = self.client.post("/v1/jobs", json=body, headers=headers)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    # ---- database --------------------------------------------------------------------------
    def jobs(self, ids: Iterable[str]) -> dict[str, Job]:
        with Session(self.engine) as session:
            rows = session.scalars(select(Job).where(Job.id.in_(list(ids)))).all()
            return {j.id: j for j in rows}

    def wait_terminal(self, ids: list[str], timeout: float) -> dict[str, Job]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs(ids)
            if all(j.status in TERMINAL for j in jobs.values()) and len(jobs) == len(ids):
                return jobs
            if time.monotonic() > deadline:
                return jobs
            time.sleep(0.3)

    def events(self, job_id: str) -> list[tuple[str, int]]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(JobEvent.kind, JobEvent.attempt)
                .where(JobEvent.job_id == job_id)
                .order_by(JobEvent.id)
            ).all()
            return [(kind, attempt) for kind, attempt in rows]

    def visible_results(self, job_id: str) -> dict[str, Any]:
        """What the database holds for the job: selections and score chunks (R1: at most one)."""
        with Session(self.engine) as session:
            selections = session.scalar(
                select(func.count()).select_from(Selection).where(Selection.job_id == job_id)
            )
            defaults = session.scalar(
                select(func.count())
                .select_from(Selection)
                .where(Selection.job_id == job_id, Selection.is_default.is_(True))
            )
            chunks = session.execute(
                select(ScoreChunk.chunk, ScoreChunk.start_row, ScoreChunk.count)
                .where(ScoreChunk.job_id == job_id)
                .order_by(ScoreChunk.chunk)
            ).all()
        return {
            "selections": selections,
            "defaults": defaults,
            "chunks": [tuple(c) for c in chunks],
        }

    # ---- results ---------------------------------------------------------------------------
    def results(self, job_id: str) -> dict[str, Any]:
        """The job's selection and scores as served by the API."""
        selection = self.client.get(f"/v1/jobs/{job_id}/selection")
        scores = self.client.get(f"/v1/jobs/{job_id}/scores")
        assert selection.status_code == 200, selection.text
        assert scores.status_code == 200, scores.text
        return {"selection": parse_selection(selection.text), "scores": parse_scores(scores.text)}


def parse_selection(text: str) -> list[tuple[int, float | None, str]]:
    rows = [json.loads(line) for line in text.splitlines() if line]
    return [(r["index"], r["score"], r["source"]) for r in rows]


def parse_scores(text: str) -> list[tuple[int, float | None, int]]:
    rows = [json.loads(line) for line in text.splitlines() if line]
    return [(r["index"], r["score"], r["length"]) for r in rows]


def job_request(job: Job) -> dict[str, Any]:
    """What determines a job's result (for `reference`)."""
    return {"task": job.task, "method": job.method, "params": job.params, "seed": job.seed}


def reference(pool: Path, validation: Path, job: dict[str, Any]) -> dict[str, Any]:
    """The fault-free result of a job, computed in this process by the stand-in (no sleeps)."""
    from app.core.models import Job as JobRow
    from tests.faults import standin_engine
    from worker.engine_bridge import job_config

    row = JobRow(task=job["task"], method=job["method"], params=job["params"], seed=job["seed"])
    saved = os.environ.get("TOV_STANDIN_SECONDS"), os.environ.get("TOV_STANDIN_TRACE")
    os.environ["TOV_STANDIN_SECONDS"] = "0,0,0"
    os.environ.pop("TOV_STANDIN_TRACE", None)
    try:
        outcome = standin_engine.run_selection(
            pool_path=pool,
            validation_path=validation,
            model=Path("standin"),
            config=job_config(row),
            checkpoint_dir=None,
        )
    finally:
        for key, value in zip(("TOV_STANDIN_SECONDS", "TOV_STANDIN_TRACE"), saved, strict=True):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    chosen = outcome.selection
    selection = [
        (int(i), _json_float(s), src)
        for i, s, src in zip(chosen.indices, chosen.scores, chosen.sources, strict=True)
    ]
    scores = [
        (i, _json_float(s), int(n))
        for i, (s, n) in enumerate(zip(outcome.scores, outcome.lengths, strict=True))
    ]
    return {"selection": selection, "scores": scores}


def _json_float(value: Any) -> float | None:
    value = float(np.float32(value))
    return None if math.isnan(value) else value


def same_result(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Identical selection (indices, order, sources) and scores (float32 values, lengths)."""

    def norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [
            tuple(
                None if v is None else (float(np.float32(v)) if isinstance(v, float) else v)
                for v in r
            )
            for r in rows
        ]

    return norm(got["selection"]) == norm(want["selection"]) and norm(got["scores"]) == norm(
        want["scores"]
    )


def chunks_consistent(chunks: list[tuple[int, int, int]], rows: int) -> bool:
    """Chunks 0..k-1, contiguous, covering exactly `rows` rows."""
    start = 0
    for i, (chunk, first, count) in enumerate(chunks):
        if chunk != i or first != start or count <= 0:
            return False
        start += count
    return start == rows


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ticker(period: float, deadline: float) -> Iterator[float]:
    while (now := time.monotonic()) < deadline:
        yield now
        time.sleep(period)
