"""The Python client against the real API in-process (FastAPI's TestClient on PostgreSQL), and
its retry and wait logic against scripted transports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service_fixtures import make_key
from tov_client import ApiError, Client, JobFailed, RetryPolicy, TransportError, WaitTimeout
from tov_client.retry import parse_retry_after

ROWS = [
    {"prompt": f"What is {a} plus {a}?", "completion": f"{2 * a}.", "source": "sums"}
    for a in range(6)
]
BODY = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


@pytest.fixture()
def tov(client: Any, api_key: str) -> Client:
    return Client(api_key=api_key, http_client=client)


def test_upload_register_list_show(
    tov: Client, tmp_path: Path, service_dirs: dict[str, Path]
) -> None:
    from_bytes = tov.upload_dataset(BODY, name="sums.jsonl")
    assert (from_bytes.rows, from_bytes.row_format, from_bytes.name) == (
        6,
        "prompt_completion",
        "sums.jsonl",
    )
    assert "source" in from_bytes.columns
    local = tmp_path / "local.jsonl"
    local.write_bytes(BODY)
    seen: list[tuple[int, int | None]] = []
    from_file = tov.upload_dataset(
        local, on_progress=lambda done, total: seen.append((done, total))
    )
    assert from_file.name == "local.jsonl" and from_file.sha256 == from_bytes.sha256
    assert seen[-1] == (len(BODY), len(BODY))
    server_file = service_dirs["data"] / "client-registered.jsonl"
    server_file.write_bytes(BODY)
    registered = tov.register_dataset(f"file://{server_file}", name="on-server")
    assert registered.name == "on-server" and registered.rows == 6
    listed = [d.id for d in tov.list_datasets()]
    assert {from_bytes.id, from_file.id, registered.id} <= set(listed)
    assert tov.get_dataset(registered.id) == registered


def test_errors_carry_the_problem_details(tov: Client, client: Any) -> None:
    bad = b'{"prompt": "fine", "completion": "ok"}\n{"prompt": "no completion"}\nnot json\n'
    with pytest.raises(ApiError) as caught:
        tov.upload_dataset(bad, name="bad.jsonl")
    error = caught.value
    assert error.status == 422 and error.title
    assert {(e.get("line"), e.get("field")) for e in error.errors} >= {(2, "completion")}
    assert any(e.get("line") == 3 for e in error.errors)
    assert error.problem["status"] == 422 and error.to_dict()["detail"] == error.detail
    with pytest.raises(ApiError) as missing:
        tov.get_job("job_does_not_exist")
    assert missing.value.status == 404 and "job_does_not_exist" in missing.value.detail
    with pytest.raises(ApiError) as refused:
        Client(api_key="tov_wrong", http_client=client).list_datasets()
    assert refused.value.status == 401


def test_jobs_create_idempotent_list_cancel(tov: Client) -> None:
    pool = tov.upload_dataset(BODY, name="pool.jsonl")
    validation = tov.upload_dataset(BODY, name="val.jsonl")
    first = tov.create_job(
        pool, validation, budget=2, tov={"rounds": 1}, metadata={"suite": "client"}
    )
    second = tov.create_job(
        pool.id, validation.id, budget=2, tov={"rounds": 1}, metadata={"suite": "client"}
    )
    assert first.id != second.id  # a fresh Idempotency-Key each call
    assert first.status == "queued" and first.params["selection"]["budget"] == 2
    again = tov.create_job(pool, validation, budget=3, idempotency_key="fixed-key")
    assert tov.create_job(pool, validation, budget=3, idempotency_key="fixed-key").id == again.id
    with pytest.raises(ApiError) as conflict:
        tov.create_job(pool, validation, budget=4, idempotency_key="fixed-key")
    assert conflict.value.status == 409

    page = tov.list_jobs(limit=2)
    assert len(page.items) == 2 and page.next_cursor
    everything = list(tov.iter_jobs(page_size=1))
    assert [j.id for j in everything][:3] == [again.id, second.id, first.id]
    tagged = tov.list_jobs(metadata={"suite": "client"}).items
    assert {j.id for j in tagged} == {first.id, second.id}

    cancelled = tov.cancel_job(first.id)
    assert cancelled.status == "cancelled" and cancelled.done and not cancelled.succeeded
    assert [j.id for j in tov.list_jobs(status="cancelled").items] == [first.id]
    assert "cancel_requested" in [e.kind for e in tov.job_events(first.id)]
    with pytest.raises(JobFailed) as failed:
        tov.wait(first.id, poll_interval=0.01)
    assert failed.value.job.status == "cancelled"
    assert tov.wait(first.id, check=False).status == "cancelled"
    with pytest.raises(ApiError) as not_ready:
        tov.download_bytes(second.id, "selection")
    assert not_ready.value.status == 409


def test_other_tenants_cannot_see_a_dataset(tov: Client, client: Any) -> None:
    mine = tov.upload_dataset(BODY)
    other = Client(api_key=make_key("client-intruder"), http_client=client)
    with pytest.raises(ApiError) as caught:
        other.get_dataset(mine.id)
    assert caught.value.status == 404


# -- retries and waiting, against scripted transports -----------------------------------------


def scripted(responses: list[httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        return queue.pop(0)

    return httpx.MockTransport(handle)


def problem(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"Content-Type": "application/problem+json", **headers},
        json={
            "title": "Slow down",
            "status": status,
            "detail": "busy",
            "code": "too_many_requests",
        },
    )


def make(
    responses: list[httpx.Response], seen: list[httpx.Request], sleeps: list[float], **policy: Any
) -> Client:
    http = httpx.Client(base_url="http://api.test", transport=scripted(responses, seen))
    retry = RetryPolicy(sleep=sleeps.append, **policy)
    return Client(api_key="tov_k", http_client=http, retry=retry)


DATASET = {
    "id": "ds_1",
    "name": "a.jsonl",
    "file_format": "jsonl",
    "row_format": "text",
    "rows": 1,
    "size_bytes": 10,
    "sha256": "0" * 64,
    "columns": ["text"],
    "created_at": "2025-01-01T00:00:00Z",
}


def job_json(status: str, fraction: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {
        "id": "job_1",
        "status": status,
        "pool": "ds_1",
        "validation": "ds_2",
        "created_at": "2025-01-01T00:00:00Z",
        "progress": {
            "stage": "score",
            "fraction": fraction,
            "rows_done": int(fraction * 10),
            "rows_total": 10,
            "eta_seconds": None,
            "message": None,
        },
        **extra,
    }


def test_retries_429_and_503_honouring_retry_after(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    sleeps: list[float] = []
    upload = tmp_path / "a.jsonl"
    upload.write_text('{"text": "hello"}\n')
    tov = make(
        [
            problem(429, **{"Retry-After": "2"}),
            problem(503, **{"Retry-After": "120"}),
            problem(503),
            httpx.Response(201, json=DATASET),
        ],
        seen,
        sleeps,
        max_wait=5,
    )
    dataset = tov.upload_dataset(upload)
    assert dataset.id == "ds_1"
    assert sleeps == [2.0, 5.0, 2.0]  # Retry-After, capped at max_wait, then backoff 0.5 * 2**2
    assert len(seen) == 4 and all(r.content == b'{"text": "hello"}\n' for r in seen)
    assert all(r.headers["Authorization"] == "Bearer tov_k" for r in seen)


def test_retries_are_bounded_and_then_raise(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    sleeps: list[float] = []
    tov = make([problem(503, **{"Retry-After": "1"})] * 3, seen, sleeps, max_retries=2)
    with pytest.raises(ApiError) as caught:
        tov.list_datasets()
    assert caught.value.status == 503 and caught.value.detail == "busy"
    assert sleeps == [1.0, 1.0] and len(seen) == 3


def test_create_job_keeps_one_idempotency_key_across_retries() -> None:
    seen: list[httpx.Request] = []
    tov = make([problem(503), httpx.Response(202, json=job_json("queued"))], seen, [])
    tov.create_job("ds_1", "ds_2", budget=5, strategy="score-only", tov={"rounds": 2})
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(keys) == 1 and len(keys.pop()) == 36  # a uuid4, the same on the retry
    body = json.loads(seen[-1].content)
    assert body == {
        "pool": "ds_1",
        "validation": "ds_2",
        "tov": {"rounds": 2},
        "selection": {"budget": 5, "strategy": "score-only"},
    }


def test_unreachable_server_raises_transport_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    sleeps: list[float] = []
    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(refuse))
    tov = Client(http_client=http, retry=RetryPolicy(max_retries=2, sleep=sleeps.append))
    with pytest.raises(TransportError):
        tov.get_job("job_1")
    assert sleeps == [0.5, 1.0]


def test_non_json_error_bodies_still_make_an_api_error() -> None:
    tov = make([httpx.Response(502, text="<html>bad gateway</html>")], [], [])
    with pytest.raises(ApiError) as caught:
        tov.get_job("job_1")
    assert caught.value.status == 502 and "bad gateway" in caught.value.detail


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now)
        == 30.0
    )
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("-3") == 0.0


def test_wait_reports_progress_and_checks_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tov_client.jobs.time.sleep", lambda s: None)
    states = [
        job_json("queued"),
        job_json("running", 0.3),
        job_json("running", 0.8),
        job_json("succeeded", 1.0),
    ]
    tov = make([httpx.Response(200, json=s) for s in states], [], [])
    seen: list[tuple[str, float]] = []
    job = tov.wait("job_1", on_progress=lambda j: seen.append((j.status, j.progress.fraction)))
    assert job.succeeded
    assert seen == [("queued", 0.0), ("running", 0.3), ("running", 0.8), ("succeeded", 1.0)]

    failed = job_json("failed", 0.5, error={"code": "engine_error", "detail": "out of memory"})
    tov = make([httpx.Response(200, json=failed)], [], [])
    with pytest.raises(JobFailed, match="out of memory") as caught:
        tov.wait("job_1")
    assert caught.value.job.error.code == "engine_error"

    tov = make([httpx.Response(200, json=job_json("running", 0.1))] * 5, [], [])
    with pytest.raises(WaitTimeout):
        tov.wait("job_1", timeout=0)


# -- multi-target jobs ---------------------------------------------------------------------------


def test_multi_target_jobs_in_process(tov: Client) -> None:
    pool = tov.upload_dataset(BODY, name="pool.jsonl")
    a = tov.upload_dataset(BODY, name="a.jsonl")
    b = tov.upload_dataset(BODY[: len(BODY) // 2], name="b.jsonl")
    job = tov.create_job(pool, targets=[a, b.id], budget=2)
    assert (job.k, job.targets, job.validation) == (2, [a.id, b.id], a.id)
    as_list = tov.create_job(pool, [a, b], budget=2, idempotency_key="multi-list")
    assert as_list.targets == [a.id, b.id]
    one = tov.create_job(pool, [a], budget=2)  # a list of one is a plain job
    assert (one.k, one.targets) == (1, [a.id])
    with pytest.raises(TypeError, match="exactly one"):
        tov.create_job(pool, budget=2)
    with pytest.raises(TypeError, match="not both"):
        tov.create_job(pool, [a, b], targets=[a, b])
    with pytest.raises(TypeError, match="exactly one"):
        tov.create_job(pool, a, targets=[a, b])
    with pytest.raises(ApiError) as too_few:  # the server's rule, with its problem details
        tov.create_job(pool, targets=[a])
    assert too_few.value.status == 422 and "at least 2" in too_few.value.detail
    with pytest.raises(ApiError) as out_of_range:
        tov.download_bytes(job.id, "scores", target=5)
    assert out_of_range.value.status == 404 and "has no target 5" in out_of_range.value.detail


def test_target_travels_in_downloads_and_selections(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    selection = {
        "id": "sel_1",
        "job_id": "job_1",
        "status": "pending",
        "target": 1,
        "budget": 3,
        "strategy": "score-only",
        "num_bins": 1,
        "seed": 0,
        "size": 0,
        "created_at": "2025-01-01T00:00:00Z",
    }
    tov = make(
        [
            httpx.Response(202, json=selection),
            httpx.Response(200, content=b'{"index": 1}\n'),
            httpx.Response(200, content=b"", headers={"content-disposition": 'filename="x.csv"'}),
        ],
        seen,
        [],
    )
    created = tov.create_selection("job_1", budget=3, strategy="score-only", target=1)
    assert created.target == 1 and json.loads(seen[0].content)["target"] == 1
    tov.download_bytes("job_1", "selection", target=1)
    assert seen[1].url.params["target"] == "1"
    tov.download("job_1", "scores", format="csv", target=0, dest=tmp_path)
    assert seen[2].url.params["target"] == "0" and (tmp_path / "x.csv").exists()


def test_cli_creates_a_multi_target_job_and_downloads_a_target(
    tov: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from tov_client import cli

    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    local = tmp_path / "b.jsonl"
    local.write_bytes(BODY)
    a = tov.upload_dataset(BODY, name="a.jsonl")
    runner = CliRunner()
    args = ["jobs", "create", "--pool", a.id, "--validation", a.id, "--validation", str(local)]
    created = runner.invoke(cli.app, [*args, "--budget", "2", "--json"])
    assert created.exit_code == 0, created.output
    job = json.loads(created.stdout)
    assert job["k"] == 2 and job["targets"][0] == a.id and job["targets"][1].startswith("ds_")
    shown = runner.invoke(cli.app, ["jobs", "show", job["id"]])
    assert shown.exit_code == 0 and "targets" in shown.stdout and "1: ds_" in shown.stdout
    early = runner.invoke(cli.app, ["download", job["id"], "--target", "1", "--json"])
    assert early.exit_code == 1 and "409" in early.stderr  # queued: no results yet
    out_of_range = runner.invoke(cli.app, ["download", job["id"], "--target", "2", "--json"])
    assert out_of_range.exit_code == 1
    assert "has no target 2" in json.loads(out_of_range.stderr)["error"]["detail"]
