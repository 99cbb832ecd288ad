"""Jobs over HTTP (no worker here): validation, idempotency, tenancy, pagination, cancel."""

from __future__ import annotations

import json
from typing import Any

from tests.app.test_datasets_api import ROWS, auth, upload
from tests.service_fixtures import make_key


def datasets(client: Any, key: str) -> tuple[str, str]:
    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    pool = upload(client, key, body).json()["id"]
    validation = upload(client, key, body, name="val.jsonl").json()["id"]
    return pool, validation


def test_create_job_is_idempotent_per_key(client: Any, api_key: str) -> None:
    pool, validation = datasets(client, api_key)
    body = {"pool": pool, "validation": validation, "selection": {"budget": 2}}
    headers = {**auth(api_key), "Idempotency-Key": "abc-1"}
    first = client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 202, first.text
    job = first.json()
    assert job["status"] == "queued"
    assert job["progress"]["rows_total"] == 5
    second = client.post("/v1/jobs", json=body, headers=headers)
    assert second.json()["id"] == job["id"]
    other = client.post("/v1/jobs", json={**body, "seed": 7}, headers=headers)
    assert other.status_code == 409


def test_unknown_fields_and_bad_values_are_rejected(client: Any, api_key: str) -> None:
    pool, validation = datasets(client, api_key)
    base = {"pool": pool, "validation": validation}
    unknown = client.post("/v1/jobs", json={**base, "colour": "red"}, headers=auth(api_key))
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "body.colour"
    budget = client.post(
        "/v1/jobs", json={**base, "selection": {"budget": 2.5}}, headers=auth(api_key)
    )
    assert budget.status_code == 422
    assert "whole number" in budget.json()["detail"]
    missing = client.post("/v1/jobs", json={**base, "pool": "ds_missing"}, headers=auth(api_key))
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith("pool: Dataset 'ds_missing'")


def test_other_tenants_see_nothing(client: Any, api_key: str) -> None:
    pool, validation = datasets(client, api_key)
    job = client.post(
        "/v1/jobs", json={"pool": pool, "validation": validation}, headers=auth(api_key)
    ).json()
    intruder = auth(make_key("intruder"))
    for path in (
        f"/v1/jobs/{job['id']}",
        f"/v1/datasets/{pool}",
        f"/v1/jobs/{job['id']}/events",
        f"/v1/jobs/{job['id']}/selection",
    ):
        assert client.get(path, headers=intruder).status_code == 404, path
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=intruder).status_code == 404
    assert client.get("/v1/jobs", headers=intruder).json()["items"] == []
    stolen = client.post(
        "/v1/jobs", json={"pool": pool, "validation": validation}, headers=intruder
    )
    assert stolen.status_code == 404


def test_list_is_paginated_newest_first(client: Any, api_key: str) -> None:
    pool, validation = datasets(client, api_key)
    ids = [
        client.post(
            "/v1/jobs",
            json={"pool": pool, "validation": validation, "seed": s},
            headers=auth(api_key),
        ).json()["id"]
        for s in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params, headers=auth(api_key)).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_cancel_a_queued_job_and_results_wait_for_success(client: Any, api_key: str) -> None:
    pool, validation = datasets(client, api_key)
    job = client.post(
        "/v1/jobs", json={"pool": pool, "validation": validation}, headers=auth(api_key)
    ).json()
    early = client.get(f"/v1/jobs/{job['id']}/selection", headers=auth(api_key))
    assert early.status_code == 409
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(api_key)).json()
    assert cancelled["status"] == "cancelled"
    kinds = [
        e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events", headers=auth(api_key)).json()
    ]
    assert kinds == ["created", "cancel_requested"]
