"""Issue 15, defect 4, end to end: a job whose pool is a slow s3:// reference answers 202 at once,
waits (`waiting_for_datasets`, not claimed by the worker) while the API fetches it outside any
transaction, then runs to `succeeded` on the real worker. uvicorn, Celery, Postgres, Redis and a
moto S3 server are real; a gated TCP proxy in front of moto holds every answer back until the
test opens the gate (a slow remote)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.test_ingest_async import _idle_in_transaction
from tests.e2e.processes import running_api, running_worker, wait_for_job
from tests.e2e.test_selection_job import OTHER, TARGET
from tests.s3_server import moto_s3

pytestmark = pytest.mark.e2e
BUCKET = "tov-slow"


def _pipe(source: socket.socket, sink: socket.socket, gate: threading.Event | None) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            if gate is not None:
                gate.wait(120)
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def gated_proxy(upstream: int, gate: threading.Event) -> Iterator[tuple[int, list[int]]]:
    """A TCP proxy to 127.0.0.1:`upstream` whose answers wait for `gate`; yields (port, a list
    that grows by one per connection)."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                server = socket.create_connection(("127.0.0.1", upstream))
                connections.append(1)
                for args in ((client, server, None), (server, client, gate)):
                    threading.Thread(target=_pipe, args=args, daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1]), connections
    finally:
        gate.set()
        listener.close()


@pytest.fixture()
def slow_s3(
    service_env: dict[str, str],
) -> Iterator[tuple[dict[str, str], threading.Event, list[int]]]:
    with moto_s3(BUCKET) as (endpoint, s3):
        pool = "".join(json.dumps(r) + "\n" for r in OTHER + TARGET * 2).encode()
        s3.put_object(Bucket=BUCKET, Key="pool.jsonl", Body=pool)
        gate = threading.Event()
        moto_port = int(endpoint.rsplit(":", 1)[1])
        with gated_proxy(moto_port, gate) as (proxy, connections):
            env = {
                **service_env,
                "TOV_S3_SHARED_PREFIXES": json.dumps([f"s3://{BUCKET}/"]),
                "TOV_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy}",
                "TOV_S3_REGION": "us-east-1",
                "TOV_S3_ACCESS_KEY_ID": "testing",
                "TOV_S3_SECRET_ACCESS_KEY": "testing",
                "TOV_S3_ALLOW_PRIVATE_ENDPOINT": "true",
            }
            yield env, gate, connections


def test_a_job_on_a_slow_reference_waits_then_runs(
    slow_s3: tuple[dict[str, str], threading.Event, list[int]],
    service_env: dict[str, str],
    installed_tiny_model: Path,
    api_key: str,
    tmp_path: Path,
) -> None:
    env, gate, connections = slow_s3
    validation = "".join(json.dumps(r) + "\n" for r in TARGET[:4]).encode()
    with running_api(env, tmp_path) as url, running_worker(env, tmp_path):
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=20
        )
        uploaded = client.post(
            "/v1/datasets?name=val.jsonl",
            content=validation,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert uploaded.status_code == 201, uploaded.text
        body = {
            "pool": f"s3://{BUCKET}/pool.jsonl",
            "validation": uploaded.json()["id"],
            "selection": {"budget": 8, "strategy": "score+random", "num_bins": 2},
            "tov": {"rounds": 2, "base_size": 4, "learning_rate": 0.01, "batch_size": 4},
            "max_length": 64,
        }
        created = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "slow-1"})
        assert created.status_code == 202, created.text
        job = created.json()
        assert job["progress"]["stage"] == "waiting_for_datasets"
        deadline = time.monotonic() + 30
        while not connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connections, "the API never started fetching the pool"
        time.sleep(2.0)  # the fetch is held back: long enough to show a held transaction

        assert _idle_in_transaction(service_env) == []
        assert client.get("/v1/datasets").status_code == 200  # the API answers meanwhile
        # The same create again (a client retry) finds the same job, still waiting.
        again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "slow-1"})
        assert again.json()["id"] == job["id"]
        waiting = client.get(f"/v1/jobs/{job['id']}").json()
        assert (waiting["status"], waiting["progress"]["stage"]) == (
            "queued",
            "waiting_for_datasets",
        )
        events = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()]
        assert "claimed" not in events  # the worker holds no GPU for it
        assert not gate.is_set()

        gate.set()
        done = wait_for_job(client, job["id"])
        assert done["status"] == "succeeded", (done, (tmp_path / "worker.log").read_text()[-3000:])
        pool = client.get(f"/v1/datasets/{job['pool']}").json()
        assert (pool["status"], pool["rows"]) == ("ready", len(OTHER + TARGET * 2))
        events = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()]
        assert events.index("datasets_ready") < events.index("claimed")
