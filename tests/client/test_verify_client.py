"""`verify` through the client and the `tov` CLI: `--verify-holdout/--verify-seeds` reach the
job, the client parses its `verify`, and `tov jobs show` prints the report (stored as the worker
stores it; the worker's own path is tests/e2e/test_verify_job.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.client.test_client import BODY
from tov_client import Client, Verify

REPORT = {
    "holdout": 0.25, "seeds": 3, "holdout_rows": 2, "selected_rows": 2,
    "base_loss": 2.5, "selected_loss": 1.25, "random_loss": 2.0,
    "selected_losses": [1.2, 1.25, 1.3], "random_losses": [2.1, 2.0, 1.9],
    "improvement": 0.75, "improvement_sd": 0.2, "improvement_percent": 37.5,
    "base_improvement": 1.25, "seconds": 3.0, "recipe": {"epochs": 3},
}  # fmt: skip


@pytest.fixture()
def tov(client: Any, api_key: str) -> Client:
    return Client(api_key=api_key, http_client=client)


def test_cli_asks_for_verification_and_shows_the_report(
    tov: Client, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from app.core.models import Job
    from tov_client import cli

    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    a = tov.upload_dataset(BODY, name="a.jsonl")
    runner = CliRunner()
    args = ["jobs", "create", "--pool", a.id, "--validation", a.id, "--budget", "2"]
    created = runner.invoke(cli.app, [*args, "--verify-holdout", "0.25", "--verify-seeds", "3"])
    assert created.exit_code == 0, created.output
    assert "verify" in created.stdout and "pending" in created.stdout
    job_id = tov.list_jobs().items[0].id
    job = tov.get_job(job_id)
    assert job.params["verify"] == {"holdout": 0.25, "seeds": 3}
    assert isinstance(job.verify, Verify) and not job.verify.reported

    row = db_session.get(Job, job_id)
    assert row is not None
    row.verify_report = REPORT
    db_session.commit()
    verified = tov.get_job(job_id).verify
    assert verified is not None and verified.reported
    assert verified.random_losses == [2.1, 2.0, 1.9] and verified.improvement_percent == 37.5
    shown = runner.invoke(cli.app, ["jobs", "show", job_id])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "base loss 2.5000, selected 1.2500, random 2.0000" in text
    assert "improvement over random +0.7500 ± 0.2000 (+37.50%)" in text

    # The options are checked: seeds alone, and a holdout the API refuses.
    alone = runner.invoke(cli.app, [*args, "--verify-seeds", "2"])
    assert alone.exit_code == 2 and "--verify-holdout" in alone.output
    refused = runner.invoke(cli.app, [*args, "--verify-holdout", "1.5", "--json"])
    assert refused.exit_code == 1
    assert "verify.holdout" in json.loads(refused.stderr)["error"]["detail"]
