"""`Client` webhook methods, `tov webhooks ...` and `tov jobs create --notify-url` against the
real API in-process."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from tov_client import ApiError, Client, cli
from tov_client.webhooks import Webhook

PUBLIC = "https://93.184.216.34/hooks"
ROWS = b'{"prompt": "a", "completion": "b"}\n' * 3


@pytest.fixture()
def tov(client: Any, api_key: str) -> Client:
    return Client(api_key=api_key, http_client=client)


def test_client_creates_lists_and_deletes_endpoints_and_reads_deliveries(tov: Client) -> None:
    created = tov.create_webhook(PUBLIC, event_types=["job.cancelled"], description="ci")
    assert isinstance(created, Webhook) and created.secret and created.secret.startswith("whsec_")
    assert [w.id for w in tov.list_webhooks()] == [created.id]
    assert tov.get_webhook(created.id).secret is None  # shown once
    pool = tov.upload_dataset(ROWS, name="p.jsonl")
    job = tov.create_job(pool, pool, notify_url=PUBLIC + "/job")
    assert job.notify is not None and job.notify["secret"].startswith("whsec_")
    tov.cancel_job(job.id)
    page = tov.webhook_deliveries(created.id)
    (delivery,) = page.items
    assert (delivery.event_type, delivery.job_id, delivery.status) == (
        "job.cancelled",
        job.id,
        "pending",
    )
    assert delivery.payload["data"]["status"] == "cancelled"
    job_scoped = tov.webhook_deliveries(job.notify["webhook_id"]).items
    assert [d.event_id for d in job_scoped] == [delivery.event_id]
    tov.delete_webhook(created.id)
    assert tov.list_webhooks() == []
    with pytest.raises(ApiError) as caught:
        tov.create_webhook("https://10.0.0.8/x")
    assert caught.value.status == 422 and "a private address" in caught.value.detail


def test_the_cli_manages_webhooks_and_passes_notify_url(
    tov: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    runner = CliRunner()
    made = runner.invoke(cli.app, ["webhooks", "create", PUBLIC, "-e", "job.failed", "--json"])
    assert made.exit_code == 0, made.output
    body = json.loads(made.stdout)
    assert body["secret"].startswith("whsec_") and body["event_types"] == ["job.failed"]
    shown = runner.invoke(cli.app, ["webhooks", "create", PUBLIC + "/2"])
    assert shown.exit_code == 0 and "signing secret (shown once, keep it): whsec_" in shown.stderr
    listed = runner.invoke(cli.app, ["webhooks", "list", "--json"])
    assert listed.exit_code == 0 and body["id"] in {w["id"] for w in json.loads(listed.stdout)}
    assert runner.invoke(cli.app, ["webhooks", "list"]).exit_code == 0  # the table
    empty = runner.invoke(cli.app, ["webhooks", "deliveries", body["id"], "--json"])
    assert empty.exit_code == 0 and json.loads(empty.stdout)["items"] == []
    refused = runner.invoke(cli.app, ["webhooks", "create", "https://127.0.0.1/x"])
    assert refused.exit_code == 1 and "loopback" in refused.stderr  # rich wraps the line
    pool = tov.upload_dataset(ROWS, name="p.jsonl")
    created = runner.invoke(
        cli.app,
        ["jobs", "create", "--pool", pool.id, "--validation", pool.id, "--notify-url", PUBLIC],
    )
    assert created.exit_code == 0, created.output
    assert "notify_url signing secret (shown once): whsec_" in created.stderr
    gone = runner.invoke(cli.app, ["webhooks", "delete", body["id"]])
    assert gone.exit_code == 0
    after = json.loads(runner.invoke(cli.app, ["webhooks", "list", "--json"]).stdout)
    assert body["id"] not in {w["id"] for w in after}
