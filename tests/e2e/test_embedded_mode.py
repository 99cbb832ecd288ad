"""The embedded default, end to end: `tov-serve` with a SQLite file and kombu's `sqla+sqlite`
transport (no PostgreSQL, no Redis) carries one real job API -> worker -> results.

The service runs as it does for `make serve`/`make demo`: `python -m app.launcher` migrates the
SQLite database and starts uvicorn, one Celery worker and the re-selection worker; the key comes
from `tov-admin`. No TOV_* variable of the test session leaks into it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import REPO, free_port, stop, wait_for_job
from tests.e2e.test_selection_job import OTHER, TARGET, reselect
from tests.service_fixtures import write_jsonl

pytestmark = pytest.mark.e2e


def embedded_env(state: Path, models: Path, data: Path) -> dict[str, str]:
    """The process environment: the caller's, less every TOV_* setting, plus the embedded ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOV_")}
    env.update(
        {
            "TOV_DATABASE_URL": f"sqlite:///{state}/tov.db",
            "TOV_BROKER_URL": f"sqla+sqlite:///{state}/broker.db",
            "TOV_ARTIFACT_ROOT": str(state / "artifacts"),
            "TOV_SHARED_DATA_ROOTS": json.dumps([str(data)]),
            "TOV_MODEL_ROOTS": json.dumps([str(models)]),
            "TOV_DEFAULT_MODEL": "tiny-llama",
            "TOV_HEARTBEAT_SECONDS": "1",
            "TOV_LEASE_SECONDS": "10",
        }
    )
    return env


def wait_ready(url: str, timeout: float = 90) -> dict[str, object]:
    """Until /readyz says the database and the broker answer (the launcher migrates first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return dict(response.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} was not ready in {timeout} s")


@contextmanager
def embedded_service(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.launcher", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() ends the launcher and its children as a group
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url)
        except TimeoutError:
            raise AssertionError(log.read_text()[-3000:]) from None
        yield url
    finally:
        stop(process)


def create_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.admin", "keys", "create", "--tenant", "embedded"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[0]


def test_the_embedded_service_runs_a_job_without_servers(
    tmp_path: Path, service_dirs: dict[str, Path], installed_tiny_model: Path
) -> None:
    state, data = tmp_path / "state", tmp_path / "data"
    data.mkdir()
    env = embedded_env(state, service_dirs["models"], data)
    pool_rows = OTHER + TARGET * 2
    pool_path = write_jsonl(data / "pool.jsonl", pool_rows)
    validation = "".join(json.dumps(r) + "\n" for r in TARGET[:4]).encode()
    log = tmp_path / "service.log"

    with embedded_service(env, log) as url:
        ready = wait_ready(url)
        key = create_key(env)
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        uploaded = client.post(
            "/v1/datasets?name=val.jsonl",
            content=validation,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert uploaded.status_code == 201, uploaded.text
        body = {
            "pool": f"file://{pool_path}",
            "validation": uploaded.json()["id"],
            "selection": {"budget": 8, "strategy": "score+random", "num_bins": 2},
            "tov": {"rounds": 2, "base_size": 4, "learning_rate": 0.01, "batch_size": 4},
            "max_length": 64,
            "seed": 3,
        }
        created = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "embedded-1"})
        assert created.status_code == 202, created.text
        job = wait_for_job(client, created.json()["id"], timeout=420)
        assert job["status"] == "succeeded", (job, log.read_text()[-4000:])
        selection = [
            json.loads(line)
            for line in client.get(f"/v1/jobs/{job['id']}/selection").text.splitlines()
        ]
        subset = [
            json.loads(line)
            for line in client.get(f"/v1/jobs/{job['id']}/subset").text.splitlines()
        ]
        events = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()]
        reselected = reselect(client, job["id"], {"budget": 5, "strategy": "score-only"})

    assert ready["checks"] == {"database": True, "broker": True}
    assert (state / "tov.db").is_file() and (state / "broker.db").is_file()
    assert job["progress"]["fraction"] == 1.0  # type: ignore[index]
    assert len(selection) == 8 and len({row["index"] for row in selection}) == 8
    assert all(0 <= row["index"] < len(pool_rows) for row in selection)
    assert {row["source"] for row in selection} == {"score", "random"}
    assert subset == [pool_rows[i] for i in sorted(row["index"] for row in selection)]
    assert events[:2] == ["created", "claimed"] and events[-1] == "succeeded"
    assert len(reselected) == 5 and {row["source"] for row in reselected} == {"score"}
