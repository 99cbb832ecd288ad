"""The leakage check through the client and the `tov` CLI: `--decontaminate-against` reaches the
job (a local file uploaded first), and GET /v1/jobs/{id}/leaks pages, filters and refuses a bad
cursor or another tenant (the leaks stored as a worker stores them; the worker's own path is
tests/e2e/test_leakage_job.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.client.test_client import BODY
from tests.service_fixtures import make_key
from tov_client import ApiError, Client


@pytest.fixture()
def tov(client: Any, api_key: str) -> Client:
    return Client(api_key=api_key, http_client=client)


def _store(session: Session, job_id: str, dataset: str, count: int) -> None:
    from app.core.models import Job
    from app.results.leaks import write_leaks

    leaks = [
        {
            "target": 0,
            "pool_index": 10 - i,
            "source": "decontaminate" if i % 2 else "validation",
            "dataset_id": dataset,
            "match_index": i,
            "similarity": 1.0 if i % 3 == 0 else 0.75,
            "kind": "exact" if i % 3 == 0 else "near",
            "excluded": bool(i % 2),
            "pool_preview": f"row {10 - i}",
            "match_preview": f"match {i}",
        }
        for i in range(count)
    ]
    write_leaks(session, job_id, leaks)
    job = session.get(Job, job_id)
    assert job is not None
    job.leak_count = count
    session.commit()


def test_cli_names_decontamination_sets_and_lists_leaks(
    tov: Client,
    client: Any,
    db_session: Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from tov_client import cli

    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    local = tmp_path / "test-set.jsonl"
    local.write_bytes(BODY)
    pool = tov.upload_dataset(BODY, name="pool.jsonl")
    runner = CliRunner()
    args = ["jobs", "create", "--pool", pool.id, "--validation", pool.id, "--budget", "2"]
    created = runner.invoke(cli.app, [*args, "--decontaminate-against", str(local), "--json"])
    assert created.exit_code == 0, created.output
    job = json.loads(created.stdout)
    (test_set,) = job["params"]["decontaminate_against"]
    assert test_set.startswith("ds_") and test_set != pool.id
    assert job["leak_count"] == 0 and job["links"]["leaks"] == f"/v1/jobs/{job['id']}/leaks"

    _store(db_session, job["id"], test_set, 7)
    page = tov.job_leaks(job["id"], limit=3)
    assert [x.pool_index for x in page.items] == [4, 5, 6] and page.next_cursor
    assert (page.total, page.excluded_total) == (7, 3)
    every = list(tov.iter_job_leaks(job["id"], page_size=3))
    assert [x.pool_index for x in every] == list(range(4, 11))
    assert all(x.dataset == test_set and x.match_preview for x in every)
    excluded = tov.job_leaks(job["id"], excluded=True)
    assert {x.pool_index for x in excluded.items} == {9, 7, 5}
    assert tov.get_job(job["id"]).leak_count == 7

    listed = runner.invoke(cli.app, ["jobs", "leaks", job["id"], "--json"])
    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.stdout)) == 7
    table = runner.invoke(cli.app, ["jobs", "leaks", job["id"], "--limit", "2"])
    assert table.exit_code == 0, table.output
    assert "row 4" in table.stdout and "row 5" in table.stdout and "near" in table.stdout
    assert "2 leak(s) shown" in table.stderr

    with pytest.raises(ApiError) as bad:
        tov.job_leaks(job["id"], cursor="bm90IGEgY3Vyc29y")
    assert bad.value.status == 422 and "cursor" in str(bad.value.detail)
    with pytest.raises(ApiError) as out_of_range:
        tov.job_leaks(job["id"], target=1)
    assert out_of_range.value.status == 404
    stranger = Client(api_key=make_key("leak-stranger"), http_client=client)
    with pytest.raises(ApiError) as hidden:
        stranger.job_leaks(job["id"])
    assert hidden.value.status == 404
    # The other tenant cannot name this tenant's test set either.
    with pytest.raises(ApiError) as refused:
        stranger.create_job(
            stranger.upload_dataset(BODY, name="p.jsonl"),
            stranger.upload_dataset(BODY, name="v.jsonl"),
            decontaminate_against=[test_set],
        )
    assert refused.value.status == 404 and test_set in str(refused.value.detail)
