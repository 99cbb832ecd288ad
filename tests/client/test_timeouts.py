"""A create that outlives the client's timeout: retried with the same Idempotency-Key, not doubled.

A real HTTP server on the loopback answers the first create too late (the server went on and made
the job, as the API does), then answers the retry at once with the job it made for that key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tov_client import Client
from tov_client.errors import TransportError
from tov_client.retry import RetryPolicy

CLIENT_TIMEOUT = 0.5


class SlowJobs(ThreadingHTTPServer):
    """POST /v1/jobs: one job per Idempotency-Key; the first `slow` answers come too late."""

    def __init__(self, slow: int) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.slow = slow
        self.keys: list[str] = []
        self.jobs: dict[str, str] = {}
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: SlowJobs

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers["Idempotency-Key"]
        with self.server.lock:
            self.server.keys.append(key)
            late = len(self.server.keys) <= self.server.slow
            job_id = self.server.jobs.setdefault(key, f"job_{len(self.server.jobs) + 1}")
        if late:
            time.sleep(CLIENT_TIMEOUT * 3)
        body = json.dumps(
            {
                "id": job_id,
                "status": "queued",
                "pool": "ds_1",
                "validation": "ds_2",
                "created_at": "2026-01-01T00:00:00Z",
            }
        ).encode()
        try:
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on this one

    def log_message(self, *args: Any) -> None:
        pass


def serve(slow: int) -> Iterator[SlowJobs]:
    server = SlowJobs(slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def once_slow() -> Iterator[SlowJobs]:
    yield from serve(slow=1)


@pytest.fixture
def always_slow() -> Iterator[SlowJobs]:
    yield from serve(slow=100)


def client_for(server: SlowJobs, retries: int) -> Client:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    retry = RetryPolicy(max_retries=retries, backoff=0.01)
    return Client(url, api_key="tov_k", timeout=CLIENT_TIMEOUT, retry=retry)


def test_a_timed_out_create_is_retried_with_the_same_key(once_slow: SlowJobs) -> None:
    job = client_for(once_slow, retries=2).create_job("ds_1", "ds_2", budget=5)
    assert job.id == "job_1"
    assert len(once_slow.keys) == 2 and len(set(once_slow.keys)) == 1
    assert len(once_slow.jobs) == 1  # one job on the server, not two


def test_when_retries_run_out_the_error_says_how_to_retry_by_hand(always_slow: SlowJobs) -> None:
    tov = client_for(always_slow, retries=1)
    with pytest.raises(TransportError) as caught:
        tov.create_job("ds_1", "ds_2", budget=5)
    key = caught.value.idempotency_key
    assert key is not None and set(always_slow.keys) == {key}
    assert caught.value.maybe_delivered
    assert f"idempotency_key={key!r}" in str(caught.value)
    assert f"Idempotency-Key: {key}" in str(caught.value)

    # Retrying by hand with that key gets the job the server already made.
    always_slow.slow = 0
    job = tov.create_job("ds_1", "ds_2", budget=5, idempotency_key=key)
    assert job.id == "job_1" and len(always_slow.jobs) == 1


def test_a_post_without_a_key_is_not_resent_after_a_timeout(always_slow: SlowJobs) -> None:
    tov = client_for(always_slow, retries=3)
    with pytest.raises(TransportError) as caught:
        tov._request("POST", "/v1/jobs", json={})  # no Idempotency-Key: a repeat could double it
    assert caught.value.maybe_delivered and len(always_slow.keys) == 1
