"""Issue 15, defect 4: references are fetched and validated after the answer, outside any database
transaction and off the event loop; a job waits for its datasets without being sent.

A local HTTPS server (files.test -> 127.0.0.2, as in tests/security/test_ssrf.py) holds back the
body of /slow.jsonl until the test opens a gate, so the fetch is in progress while the test looks
at the API and at Postgres (pg_stat_activity) from outside.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.datasets.sources import https, network
from tests.security.helpers import make_certificate, reply, tls_server
from tests.security.test_ssrf import STUB_DNS, remote_env  # noqa: F401  (a fixture)

ROWS = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(6)]
BODY = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
BAD = b'{"prompt": "q0", "completion": "a0"}\n{"prompt": "q1"}\n'


def held_back(gate: threading.Event, body: bytes) -> Any:
    """A 200 whose headers go out at once and whose body waits for `gate` (a slow remote)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/x-ndjson")
        handler.end_headers()
        handler.wfile.flush()
        gate.wait(60)
        handler.wfile.write(body)

    return route


@pytest.fixture()
def slow_remote(
    remote_env: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    import ssl

    cert, key_file = make_certificate(tmp_path_factory.mktemp("tls"), "files.test")
    gate = threading.Event()
    routes = {
        "/slow.jsonl": held_back(gate, BODY),
        "/pool.jsonl": reply(200, BODY, {"Content-Type": "application/x-ndjson"}),
        "/bad.jsonl": reply(200, BAD, {"Content-Type": "application/x-ndjson"}),
    }
    with tls_server(cert, key_file, routes) as (port, requested):
        STUB_DNS["files.test"] = ["127.0.0.2"]
        real_refusal = network.address_refusal
        monkeypatch.setattr(
            network, "address_refusal", lambda a: None if a == "127.0.0.2" else real_refusal(a)
        )
        monkeypatch.setattr(
            https, "_ssl_context", lambda: ssl.create_default_context(cafile=str(cert))
        )
        try:
            yield {
                "url": f"https://files.test:{port}",
                "gate": gate,
                "requested": requested,
                "client": remote_env[0],
                "key": remote_env[1],
            }
        finally:
            gate.set()
            STUB_DNS.pop("files.test", None)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _until(check: Any, what: str, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _idle_in_transaction(service_env: dict[str, str], held: float = 1.0) -> list[str]:
    """Sessions of this test database idle inside a transaction open for `held` seconds or
    more, seen from outside (a transaction held across a fetch of seconds shows here; the
    short ones that record an outcome come and go)."""
    dsn = service_env["TOV_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid() "
            "AND xact_start < now() - make_interval(secs => %s)",
            (held,),
        ).fetchall()
    return [f"{state}: {query[:200]}" for state, query in rows]


def _job(env: dict[str, Any], job_id: str) -> dict[str, Any]:
    return dict(env["client"].get(f"/v1/jobs/{job_id}", headers=_auth(env["key"])).json())


def test_a_job_with_a_slow_reference_answers_at_once_waits_then_is_sent(
    slow_remote: dict[str, Any], service_env: dict[str, str]
) -> None:
    from app.core.config import get_settings
    from app.core.db import get_sessionmaker
    from app.core.models import Job, JobEvent
    from worker.reaper import reap_once

    env, client = slow_remote, slow_remote["client"]
    body = {
        "pool": f"{env['url']}/slow.jsonl",
        "validation": f"{env['url']}/pool.jsonl",
        "selection": {"budget": 2},
    }
    created = client.post("/v1/jobs", json=body, headers=_auth(env["key"]))
    assert created.status_code == 202, created.text
    job = created.json()
    # Answered while the pool's body is still held back by the server.
    assert not env["gate"].is_set()
    assert job["status"] == "queued"
    assert job["progress"]["stage"] == "waiting_for_datasets"
    _until(lambda: "/slow.jsonl" in env["requested"], "the fetch to start")
    time.sleep(1.5)  # the fetch has been held for longer than `held` below

    # Mid-fetch: no transaction is held open, other calls answer, the pool is `validating`.
    assert _idle_in_transaction(service_env) == []
    listed = client.get("/v1/datasets", headers=_auth(env["key"]))
    assert listed.status_code == 200
    pool = client.get(f"/v1/datasets/{job['pool']}", headers=_auth(env["key"])).json()
    assert pool["status"] == "validating"
    assert pool["rows"] == 0
    assert _job(env, job["id"])["progress"]["stage"] == "waiting_for_datasets"
    # The reaper neither sends nor re-queues a waiting job: it holds no GPU and is not lost.
    with get_sessionmaker()() as session:
        counts = reap_once(session, get_settings())
        assert counts["resent"] == 0
        row = session.get(Job, job["id"])
        assert row is not None and row.published_at is None
    assert not env["gate"].is_set()

    env["gate"].set()
    released = _until(
        lambda: (j := _job(env, job["id"]))["progress"]["stage"] != "waiting_for_datasets" and j,
        "the job to leave waiting_for_datasets",
    )
    assert released["status"] in ("queued", "running", "succeeded")
    assert released["progress"]["rows_total"] == len(ROWS)
    pool = client.get(f"/v1/datasets/{job['pool']}", headers=_auth(env["key"])).json()
    assert pool["status"] == "ready"
    assert (pool["rows"], pool["file_format"]) == (len(ROWS), "jsonl")

    def sent() -> bool:
        with get_sessionmaker()() as session:
            row = session.get(Job, job["id"])
            return row is not None and row.published_at is not None

    _until(sent, "the job to be sent to the workers")  # just after the release's commit
    with get_sessionmaker()() as session:
        kinds = [e.kind for e in session.query(JobEvent).filter(JobEvent.job_id == job["id"])]
        assert "datasets_ready" in kinds


def test_a_registered_reference_answers_202_validating_then_ready(
    slow_remote: dict[str, Any], service_env: dict[str, str]
) -> None:
    env, client = slow_remote, slow_remote["client"]
    answer = client.post(
        "/v1/datasets", json={"uri": f"{env['url']}/slow.jsonl"}, headers=_auth(env["key"])
    )
    assert answer.status_code == 202, answer.text
    dataset = answer.json()
    assert dataset["status"] == "validating"
    assert answer.headers["Location"] == f"/v1/datasets/{dataset['id']}"
    _until(lambda: "/slow.jsonl" in env["requested"], "the fetch to start")
    time.sleep(1.5)
    assert _idle_in_transaction(service_env) == []
    # A job naming the validating dataset by id waits for it too.
    job = client.post(
        "/v1/jobs",
        json={"pool": dataset["id"], "validation": dataset["id"], "selection": {"budget": 2}},
        headers=_auth(env["key"]),
    ).json()
    assert job["progress"]["stage"] == "waiting_for_datasets"
    env["gate"].set()
    ready = _until(
        lambda: (
            (d := client.get(f"/v1/datasets/{dataset['id']}", headers=_auth(env["key"])).json())[
                "status"
            ]
            == "ready"
            and d
        ),
        "the dataset to be ready",
    )
    assert ready["rows"] == len(ROWS)
    _until(
        lambda: _job(env, job["id"])["progress"]["stage"] != "waiting_for_datasets",
        "the job to be released",
    )
    # ?wait=true keeps the synchronous answer.
    now = client.post(
        "/v1/datasets?wait=true",
        json={"uri": f"{env['url']}/pool.jsonl"},
        headers=_auth(env["key"]),
    )
    assert now.status_code == 201, now.text
    assert (now.json()["status"], now.json()["rows"]) == ("ready", len(ROWS))


def test_a_reference_that_fails_validation_fails_its_dataset_and_its_job(
    slow_remote: dict[str, Any],
) -> None:
    env, client = slow_remote, slow_remote["client"]
    uri = f"{env['url']}/bad.jsonl"
    synchronous = client.post(
        "/v1/datasets?wait=true", json={"uri": uri}, headers=_auth(env["key"])
    )
    assert synchronous.status_code == 422
    expected = synchronous.json()["errors"]
    assert expected and {"line", "field", "reason"} <= set(expected[0])

    answer = client.post("/v1/datasets", json={"uri": uri}, headers=_auth(env["key"]))
    assert answer.status_code == 202
    failed = _until(
        lambda: (
            (
                d := client.get(
                    f"/v1/datasets/{answer.json()['id']}", headers=_auth(env["key"])
                ).json()
            )["status"]
            == "failed"
            and d
        ),
        "the dataset to fail",
    )
    assert failed["errors"] == expected  # the same {file, line, field, reason} as the 422
    assert failed["error"] == synchronous.json()["detail"]

    body = {"pool": f"{env['url']}/pool.jsonl", "validation": uri, "selection": {"budget": 2}}
    job = client.post("/v1/jobs", json=body, headers=_auth(env["key"]))
    assert job.status_code == 202, job.text
    ended = _until(
        lambda: (j := _job(env, job.json()["id"]))["status"] == "failed" and j, "the job to fail"
    )
    assert ended["error"]["code"] == "invalid_dataset"
    detail = ended["error"]["detail"]
    assert detail.startswith(f"validation: dataset '{ended['validation']}'")
    assert f"line {expected[0]['line']}" in detail and expected[0]["field"] in detail
    # A failed dataset named by id is refused at create, with its errors.
    again = client.post(
        "/v1/jobs",
        json={**body, "validation": ended["validation"]},
        headers=_auth(env["key"]),
    )
    assert again.status_code == 422
    assert again.json()["errors"] == expected


def test_a_validation_left_by_a_dead_process_is_taken_over(
    slow_remote: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API process died mid-fetch: the row stays `validating`; past STALE_SECONDS a sweep
    (in any API process) takes it over and validates it again; past MAX_ATTEMPTS it fails."""
    from sqlalchemy import update

    from app.core.config import get_settings
    from app.core.db import get_sessionmaker
    from app.core.models import Dataset, utcnow
    from app.datasets import ingest

    env, client = slow_remote, slow_remote["client"]
    monkeypatch.setattr(ingest, "start", lambda ids: None)  # "dies": nothing validates it
    ids = [
        client.post(
            "/v1/datasets", json={"uri": f"{env['url']}/pool.jsonl"}, headers=_auth(env["key"])
        ).json()["id"]
        for _ in range(2)
    ]
    long_ago = utcnow() - timedelta(seconds=ingest.STALE_SECONDS + 60)
    with get_sessionmaker()() as session:
        session.execute(
            update(Dataset).where(Dataset.id.in_(ids)).values(validation_started_at=long_ago)
        )
        session.execute(
            update(Dataset)
            .where(Dataset.id == ids[1])
            .values(validation_attempts=ingest.MAX_ATTEMPTS)
        )
        session.commit()
    taken = ingest.resume_stale(get_settings())
    assert taken == [ids[0]]
    assert ingest.resume_stale(get_settings()) == []  # taken over once, not twice
    ingest.validate_now(ids[0], get_settings())
    shown = [client.get(f"/v1/datasets/{i}", headers=_auth(env["key"])).json() for i in ids]
    assert shown[0]["status"] == "ready" and shown[0]["rows"] == len(ROWS)
    assert shown[1]["status"] == "failed"
    assert "interrupted" in shown[1]["error"]


def test_an_upload_is_validated_in_a_thread_with_no_transaction_open(
    client: Any, api_key: str, service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.datasets import service

    seen: list[tuple[str, list[str]]] = []
    real = service.validate_file

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append((threading.current_thread().name, _idle_in_transaction(service_env, 0.0)))
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "validate_file", watched)
    answer = client.post(
        "/v1/datasets?name=u.jsonl",
        content=BODY,
        headers={**_auth(api_key), "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 201, answer.text
    assert (answer.json()["status"], answer.json()["rows"]) == ("ready", len(ROWS))
    [(thread, idle)] = seen
    assert thread != threading.main_thread().name  # not the event loop's thread
    assert idle == []


def test_the_migration_runs_on_sqlite(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    from app.migrate import upgrade_database

    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade_database(url)
    columns = {c["name"] for c in inspect(create_engine(url)).get_columns("dataset")}
    assert {"status", "error", "errors", "validation_started_at"} <= columns
