"""Webhooks over HTTP and their delivery in this process (the worker's code, no worker):
endpoints and their secret, tenancy, the SSRF rules, the outbox written with the state change,
signatures a real receiver verifies with `standardwebhooks`, back-off and exactly-once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.models import WebhookDelivery, WebhookEvent
from tests.app.test_datasets_api import auth
from tests.app.test_jobs_api import datasets
from tests.service_fixtures import make_key
from tests.webhook_receiver import Receiver, running_receiver
from worker.webhooks import deliver_due

PUBLIC = "https://93.184.216.34/hooks/tov"  # a public IP literal: no DNS needed to accept it


@pytest.fixture()
def local_receivers(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Let this test's receivers on 127.0.0.1 through (an operator's opt-in); retry fast."""
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_allow_insecure", True)
    monkeypatch.setattr(settings, "webhook_retry_schedule", [0.0, 0.0, 0.0])
    monkeypatch.setattr(settings, "webhook_timeout_seconds", 5.0)
    # The session's database is shared: earlier tests' pending deliveries (to addresses that are
    # never reached from here) would be sent too. Set them aside.
    with get_sessionmaker()() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.status == "pending")
            .values(status="failed", next_attempt_at=None)
        )
        session.commit()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def create(client: Any, key: str, url: str, **extra: Any) -> Any:
    return client.post("/v1/webhooks", json={"url": url, **extra}, headers=auth(key))


def queued_job(client: Any, key: str, **extra: Any) -> dict[str, Any]:
    pool, validation = datasets(client, key)
    response = client.post(
        "/v1/jobs", json={"pool": pool, "validation": validation, **extra}, headers=auth(key)
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def cancel(client: Any, key: str, job_id: str) -> None:
    answer = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))
    assert answer.json()["status"] == "cancelled"


def deliveries(client: Any, key: str, webhook_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=auth(key))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def test_the_secret_is_shown_once_and_endpoints_list_and_delete(client: Any, api_key: str) -> None:
    created = create(client, api_key, PUBLIC, event_types=["job.succeeded", "job.failed"])
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert body["event_types"] == ["job.succeeded", "job.failed"]
    assert created.headers["Location"] == f"/v1/webhooks/{body['id']}"
    shown = client.get(f"/v1/webhooks/{body['id']}", headers=auth(api_key)).json()
    assert "secret" not in shown and shown["url"] == PUBLIC
    default = create(client, api_key, PUBLIC + "/all").json()
    assert default["event_types"] == [
        "job.succeeded",
        "job.failed",
        "job.cancelled",
        "selection.succeeded",
    ]
    first = client.get("/v1/webhooks?limit=1", headers=auth(api_key)).json()
    assert [w["id"] for w in first["items"]] == [default["id"]]  # newest first
    second = client.get(
        f"/v1/webhooks?limit=1&cursor={first['next_cursor']}", headers=auth(api_key)
    ).json()
    assert [w["id"] for w in second["items"]] == [body["id"]]
    assert all("secret" not in w for w in first["items"] + second["items"])
    assert client.delete(f"/v1/webhooks/{body['id']}", headers=auth(api_key)).status_code == 204
    assert client.get(f"/v1/webhooks/{body['id']}", headers=auth(api_key)).status_code == 404
    bad = create(client, api_key, PUBLIC, event_types=["job.started"])
    assert bad.status_code == 422


def test_a_tenant_never_sees_or_deletes_another_tenants_webhooks(client: Any, api_key: str) -> None:
    mine = create(client, api_key, PUBLIC).json()
    intruder = make_key("webhook-intruder")
    for path in (f"/v1/webhooks/{mine['id']}", f"/v1/webhooks/{mine['id']}/deliveries"):
        answer = client.get(path, headers=auth(intruder))
        assert answer.status_code == 404, path
    assert client.delete(f"/v1/webhooks/{mine['id']}", headers=auth(intruder)).status_code == 404
    assert client.get("/v1/webhooks", headers=auth(intruder)).json()["items"] == []
    assert client.get(f"/v1/webhooks/{mine['id']}", headers=auth(api_key)).status_code == 200


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://10.1.2.3/hook", "a private address"),
        ("https://127.0.0.1:8443/hook", "a loopback address"),
        ("https://localhost/hook", "a loopback address"),
        ("https://169.254.169.254/latest/meta-data", "a link-local address"),
        ("https://[::ffff:10.0.0.1]/hook", "IPv4-mapped"),
        ("https://2130706433/hook", "not a canonical IP address"),
        ("http://93.184.216.34/hook", "use https://"),
        ("https://user:pw@93.184.216.34/hook", "credentials"),
        ("ftp://93.184.216.34/hook", "not allowed for webhooks"),
    ],
)
def test_private_and_unsafe_receivers_are_refused(
    client: Any, api_key: str, url: str, reason: str
) -> None:
    refused = create(client, api_key, url)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith("url: ") and reason in detail, detail


def test_a_private_notify_url_is_refused_before_the_job_is_written(
    client: Any, api_key: str
) -> None:
    pool, validation = datasets(client, api_key)
    refused = client.post(
        "/v1/jobs",
        json={"pool": pool, "validation": validation, "notify_url": "https://192.168.0.7/x"},
        headers=auth(api_key),
    )
    assert refused.status_code == 422, refused.text
    assert "notify_url: " in refused.json()["detail"]
    assert "a private address" in refused.json()["detail"]
    assert client.get("/v1/jobs", headers=auth(api_key)).json()["items"] == []


def test_the_event_is_written_with_the_state_change_for_subscribed_endpoints_only(
    client: Any, api_key: str
) -> None:
    wants = create(client, api_key, PUBLIC, event_types=["job.cancelled"]).json()
    ignores = create(client, api_key, PUBLIC + "/ok", event_types=["job.succeeded"]).json()
    other = make_key("webhook-other-tenant")
    elsewhere = create(client, other, PUBLIC + "/other").json()
    job = queued_job(client, api_key, notify_url=PUBLIC + "/job", metadata={"run": "r7"})
    notify = job["notify"]
    assert notify["url"] == PUBLIC + "/job" and notify["secret"].startswith("whsec_")
    seen = client.get(f"/v1/jobs/{job['id']}", headers=auth(api_key)).json()
    assert seen["notify"]["webhook_id"] == notify["webhook_id"] and seen["notify"]["secret"] is None
    with get_sessionmaker()() as session:  # nothing before the change
        assert (
            session.scalars(select(WebhookEvent).where(WebhookEvent.job_id == job["id"])).all()
            == []
        )
    cancel(client, api_key, job["id"])
    cancel(client, api_key, job["id"])  # a repeated cancel changes nothing: no second event
    listed = deliveries(client, api_key, wants["id"])
    assert len(listed) == 1
    (delivery,) = listed
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    assert delivery["event_type"] == "job.cancelled" and delivery["job_id"] == job["id"]
    payload = delivery["payload"]
    assert payload["type"] == "job.cancelled"
    assert payload["data"]["status"] == "cancelled" and payload["data"]["metadata"] == {"run": "r7"}
    assert payload["data"]["links"]["job"] == f"/v1/jobs/{job['id']}"
    assert deliveries(client, api_key, ignores["id"]) == []
    assert deliveries(client, other, elsewhere["id"]) == []
    job_scoped = deliveries(client, api_key, notify["webhook_id"])
    assert [d["event_id"] for d in job_scoped] == [delivery["event_id"]]  # one event, two sends


def test_deliveries_are_signed_verified_and_never_sent_twice(
    client: Any, api_key: str, local_receivers: None, receiver: Receiver
) -> None:
    created = create(client, api_key, receiver.url("/tenant")).json()
    receiver.secrets["/tenant"] = created["secret"]
    job = queued_job(client, api_key, notify_url=receiver.url("/job"))
    receiver.secrets["/job"] = job["notify"]["secret"]
    cancel(client, api_key, job["id"])
    assert deliver_due() == 2
    assert deliver_due() == 0  # delivered: nothing is due any more
    for path in ("/tenant", "/job"):
        (got,) = receiver.got(path)
        assert got.verified, f"{path}: the signature did not verify"
        assert got.payload is not None and got.payload["type"] == "job.cancelled"
        assert got.payload["data"]["job_id"] == job["id"]
    assert receiver.event_ids("/tenant") == receiver.event_ids("/job")  # the same event
    (row,) = deliveries(client, api_key, created["id"])
    assert row["status"] == "delivered" and row["attempts"] == 1
    assert row["event_id"] == receiver.event_ids("/tenant")[0]
    assert row["attempt_log"][0]["status_code"] == 204 and row["next_attempt_at"] is None


def test_a_wrong_secret_does_not_verify(
    client: Any, api_key: str, local_receivers: None, receiver: Receiver
) -> None:
    """The receiver's check is real: a signature made with another secret is refused (400),
    and the delivery stays pending for a retry."""
    create(client, api_key, receiver.url("/tenant"))
    other = create(client, make_key("webhook-secret-other"), PUBLIC).json()
    receiver.secrets["/tenant"] = other["secret"]
    job = queued_job(client, api_key)
    cancel(client, api_key, job["id"])
    deliver_due(limit=1)
    (got,) = receiver.got("/tenant")
    assert not got.verified


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_receiver_down_at_first_gets_the_event_later_exactly_once(
    client: Any, api_key: str, local_receivers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "webhook_retry_schedule", [0.0, 0.0, 0.0, 0.0, 0.0])
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/down"
    created = create(client, api_key, url).json()
    job = queued_job(client, api_key)
    cancel(client, api_key, job["id"])
    deliver_due(limit=2)  # two attempts, both refused
    (row,) = deliveries(client, api_key, created["id"])
    assert row["status"] == "pending" and row["attempts"] == 2
    assert row["last_status_code"] is None and "ConnectError" in row["last_error"]
    assert [a["attempt"] for a in row["attempt_log"]] == [1, 2]
    with running_receiver(port) as receiver:
        receiver.secrets["/down"] = created["secret"]
        deliver_due()
        deliver_due()
        (got,) = receiver.got("/down")
    assert got.verified and got.headers["webhook-id"] == row["event_id"]
    (after,) = deliveries(client, api_key, created["id"])
    assert after["status"] == "delivered" and after["attempts"] == 3


def test_the_back_off_schedule_ends_in_failed(
    client: Any, api_key: str, local_receivers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "webhook_retry_schedule", [0.0, 0.0, 3600.0])
    created = create(client, api_key, f"http://127.0.0.1:{_closed_port()}/never").json()
    job = queued_job(client, api_key)
    cancel(client, api_key, job["id"])
    deliver_due()  # attempts 1 and 2 now; the third is due in an hour
    (row,) = deliveries(client, api_key, created["id"])
    assert row["status"] == "pending" and row["attempts"] == 2
    with get_sessionmaker()() as session:  # an hour passes
        delivery = session.get(WebhookDelivery, row["id"])
        assert delivery is not None and delivery.next_attempt_at is not None
        waited = (delivery.next_attempt_at - delivery.created_at).total_seconds()
        assert 3500 < waited < 3700
        delivery.next_attempt_at = delivery.created_at
        session.commit()
    deliver_due()
    (last,) = deliveries(client, api_key, created["id"])
    assert last["status"] == "failed" and last["attempts"] == 3 and last["next_attempt_at"] is None
    failed = client.get(
        f"/v1/webhooks/{created['id']}/deliveries?status=failed", headers=auth(api_key)
    ).json()["items"]
    assert [d["id"] for d in failed] == [last["id"]]


def test_concurrent_senders_send_each_delivery_once(
    client: Any, api_key: str, local_receivers: None, receiver: Receiver
) -> None:
    """Four senders at once over 12 due deliveries: row locks (FOR UPDATE SKIP LOCKED) and the
    lease give each to one sender; the receiver sees each event id once."""
    created = create(client, api_key, receiver.url("/many")).json()
    receiver.secrets["/many"] = created["secret"]
    jobs = [queued_job(client, api_key) for _ in range(12)]
    for job in jobs:
        cancel(client, api_key, job["id"])
    threads = [threading.Thread(target=deliver_due) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ids = receiver.event_ids("/many")
    assert len(ids) == 12 and len(set(ids)) == 12
    assert all(r.verified for r in receiver.got("/many"))
    rows = deliveries(client, api_key, created["id"])
    assert {d["status"] for d in rows} == {"delivered"} and {d["attempts"] for d in rows} == {1}


def test_https_receivers_get_the_checked_address_and_a_rebound_name_is_refused(
    client: Any,
    api_key: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SSRF rules at send time, on the secure path: the name is resolved once and the
    connection goes to that address, TLS verified for the name (SNI); a name that comes to
    resolve to a private address is refused at the next attempt, and nothing is sent."""
    import ssl

    from app.datasets.sources import network
    from tests.security.helpers import make_certificate
    from worker import webhooks

    cert, key_file = make_certificate(tmp_path, "hooks.test")
    dns = {"hooks.test": ["127.0.0.2"]}
    monkeypatch.setattr(network, "_getaddrinfo", lambda host, port: dns[host])
    real_refusal = network.address_refusal
    monkeypatch.setattr(  # 127.0.0.2 stands for a public address in this test
        network, "address_refusal", lambda a: None if a == "127.0.0.2" else real_refusal(a)
    )
    monkeypatch.setattr(
        webhooks, "_ssl_context", lambda: ssl.create_default_context(cafile=str(cert))
    )
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_retry_schedule", [0.0, 0.0])
    with get_sessionmaker()() as session:  # set earlier tests' pending deliveries aside
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.status == "pending")
            .values(status="failed", next_attempt_at=None)
        )
        session.commit()
    with running_receiver(address="127.0.0.2", tls=(cert, key_file)) as receiver:
        url = f"https://hooks.test:{receiver.port}/secure"
        created = create(client, api_key, url)
        assert created.status_code == 201, created.text
        receiver.secrets["/secure"] = created.json()["secret"]
        cancel(client, api_key, queued_job(client, api_key)["id"])
        deliver_due()
        (got,) = receiver.got("/secure")
        assert got.verified and got.headers["host"] == f"hooks.test:{receiver.port}"
        dns["hooks.test"] = ["10.0.0.5"]  # the name now points inside the network
        cancel(client, api_key, queued_job(client, api_key)["id"])
        deliver_due()
        assert len(receiver.got("/secure")) == 1  # nothing went to the private address
    rows = deliveries(client, api_key, created.json()["id"])
    refused = [d for d in rows if d["status"] != "delivered"]
    assert len(refused) == 1 and refused[0]["status"] == "failed"
    assert "10.0.0.5, a private address" in refused[0]["last_error"]
