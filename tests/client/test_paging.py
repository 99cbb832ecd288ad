"""Issue 15 (defect 6): the client and the CLI page through datasets (X-Next-Cursor) and job
events (`after`/`limit`), against the real API in-process on PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.app.test_dataset_paging import tenant_with_datasets
from tov_client import ApiError, Client, DatasetPage, cli

BODY = b'{"prompt": "a?", "completion": "b."}\n' * 3


@pytest.fixture()
def tov(client: Any, api_key: str) -> Client:
    return Client(api_key=api_key, http_client=client)


@pytest.fixture()
def runner(tov: Client, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    return CliRunner()


def counted(client: Any, key: str) -> tuple[Client, list[httpx.Request]]:
    """A client that records the requests it sends, to show how many pages it asked for."""
    seen: list[httpx.Request] = []
    client.event_hooks["request"] = [seen.append]
    return Client(api_key=key, http_client=client), seen


def test_list_datasets_follows_every_page(client: Any) -> None:
    key, expected = tenant_with_datasets(230)
    tov, seen = counted(client, key)
    assert [d.id for d in tov.list_datasets()] == expected  # past the 100 of one page
    assert len(seen) == 3
    seen.clear()
    assert [d.id for d in tov.list_datasets(limit=5)] == expected[:5]
    assert len(seen) == 1  # no page asked for beyond the limit
    assert [d.id for d in tov.iter_datasets(page_size=13)] == expected
    page = tov.dataset_page(limit=7)
    assert isinstance(page, DatasetPage) and [d.id for d in page.items] == expected[:7]
    following = tov.dataset_page(limit=7, cursor=page.next_cursor)
    assert [d.id for d in following.items] == expected[7:14]
    with pytest.raises(ApiError) as bad:
        tov.dataset_page(cursor="not-a-cursor")
    assert bad.value.status == 422 and "cursor" in bad.value.detail
    with pytest.raises(ValueError):
        tov.list_datasets(limit=0)


def test_a_page_from_an_older_server_or_an_envelope() -> None:
    row = {
        "id": "ds_1",
        "name": "a",
        "file_format": "jsonl",
        "row_format": "text",
        "rows": 1,
        "size_bytes": 1,
        "sha256": "0",
        "created_at": "2026-01-01T00:00:00Z",
    }
    answers = iter([[row], {"items": [row], "next_cursor": "c2"}])
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=next(answers)))
    tov = Client(api_key="k", http_client=httpx.Client(base_url="http://x", transport=transport))
    old = tov.dataset_page()  # a bare list and no header: one last page
    assert [d.id for d in old.items] == ["ds_1"] and old.next_cursor is None
    assert tov.dataset_page().next_cursor == "c2"


def test_cli_lists_all_datasets_or_one_page(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key, expected = tenant_with_datasets(130)
    tov = Client(api_key=key, http_client=client)
    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    runner = CliRunner()
    every = runner.invoke(cli.app, ["datasets", "list", "--json"])
    assert every.exit_code == 0, every.output
    assert [d["id"] for d in json.loads(every.stdout)] == expected
    page = runner.invoke(cli.app, ["datasets", "list", "--limit", "3", "--json"])
    first = json.loads(page.stdout)
    assert [d["id"] for d in first["items"]] == expected[:3] and first["next_cursor"]
    more = ["datasets", "list", "--limit", "3", "--cursor", first["next_cursor"], "--json"]
    assert [d["id"] for d in json.loads(runner.invoke(cli.app, more).stdout)["items"]] == (
        expected[3:6]
    )
    table = runner.invoke(cli.app, ["datasets", "list", "--limit", "2"])
    assert table.exit_code == 0 and "more: --cursor" in table.stderr


def job_with_events(tov: Client, extra: int) -> tuple[str, list[int]]:
    """A queued job with `extra` more events than its own (written to the database: a real
    job records a handful). Returns its id and every event id, oldest first."""
    from app.core.db import get_sessionmaker
    from app.core.models import JobEvent

    pool = tov.upload_dataset(BODY, name="pool.jsonl")
    job = tov.create_job(pool, pool, budget=1)
    with get_sessionmaker()() as session:
        session.add_all(
            JobEvent(job_id=job.id, kind="note", message=f"event {i}") for i in range(extra)
        )
        session.commit()
    every = tov.job_events(job.id, limit=1000)
    assert all(e.id is not None for e in every)
    return job.id, [e.id for e in every if e.id is not None]


def test_job_events_page_with_after_and_limit(tov: Client) -> None:
    job_id, ids = job_with_events(tov, 130)
    assert len(ids) > 130 and ids == sorted(ids)
    assert [e.id for e in tov.job_events(job_id)] == ids[:100]  # the server's default page
    first = tov.job_events(job_id, limit=10)
    assert [e.id for e in first] == ids[:10]
    following = tov.job_events(job_id, after=first[-1].id, limit=10)
    assert [e.id for e in following] == ids[10:20]
    assert tov.job_events(job_id, after=ids[-1]) == []
    assert [e.id for e in tov.iter_job_events(job_id, page_size=7)] == ids
    assert [e.id for e in tov.iter_job_events(job_id)] == ids  # 100 a page, then the rest
    assert [e.id for e in tov.iter_job_events(job_id, after=ids[-3])] == ids[-2:]
    with pytest.raises(ApiError) as bad:
        tov.job_events(job_id, limit=1001)
    assert bad.value.status == 422


def test_cli_events_pages_and_show_follows_every_page(tov: Client, runner: CliRunner) -> None:
    job_id, ids = job_with_events(tov, 110)
    page = runner.invoke(cli.app, ["jobs", "events", job_id, "--limit", "5", "--json"])
    assert page.exit_code == 0, page.output
    assert [e["id"] for e in json.loads(page.stdout)] == ids[:5]
    rest = runner.invoke(cli.app, ["jobs", "events", job_id, "--after", str(ids[4]), "--json"])
    assert [e["id"] for e in json.loads(rest.stdout)] == ids[5:]
    table = runner.invoke(cli.app, ["jobs", "events", job_id, "--limit", "3"])
    assert table.exit_code == 0 and "created" in table.stdout
    assert f"more: --after {ids[2]}" in table.stderr
    shown = runner.invoke(cli.app, ["jobs", "show", job_id, "--events", "--json"])
    assert [e["id"] for e in json.loads(shown.stdout)["events"]] == ids  # past one page of 100
    refused = runner.invoke(cli.app, ["jobs", "events", job_id, "--limit", "0"])
    assert refused.exit_code == 2
