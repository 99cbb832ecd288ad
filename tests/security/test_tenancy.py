"""S3: tenant B asks for every id-bearing resource of tenant A, with every method: 0 leaks.

The routes are discovered from the application itself, so a route added later is covered without
editing this test. Tenant A owns datasets, a queued job, a succeeded job with scores and a
selection. Tenant B (a valid key of its own) sends GET, POST, PUT, PATCH and DELETE to every route
that carries an id, with A's ids; also A's ids in query parameters, in job bodies, and A's stored
file paths. Every answer must be 404 or 405 and must carry none of A's data; afterwards A's
resources must be exactly as before (no cross-tenant write).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from tests.service_fixtures import finish_with_results, make_key

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROWS = [{"prompt": f"Secret question {i}?", "completion": f"SECRET-ANSWER-{i}"} for i in range(6)]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def world(service_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    from fastapi.testclient import TestClient

    from app.core.db import get_sessionmaker
    from app.core.models import Job, Webhook
    from app.main import create_app
    from app.webhooks.service import new_secret

    key_a, key_b = make_key("tenant-a-s3"), make_key("tenant-b-s3")
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
        headers = {**auth(key_a), "Content-Type": "application/x-ndjson"}
        pool = client.post("/v1/datasets?name=a-pool.jsonl", content=body, headers=headers).json()
        val = client.post("/v1/datasets?name=a-val.jsonl", content=body, headers=headers).json()
        spare = client.post("/v1/datasets?name=a-spare.jsonl", content=body, headers=headers)
        job_body = {"pool": pool["id"], "validation": val["id"], "selection": {"budget": 2}}
        queued = client.post("/v1/jobs", json=job_body, headers=auth(key_a)).json()
        done = client.post("/v1/jobs", json={**job_body, "seed": 1}, headers=auth(key_a)).json()
        with get_sessionmaker()() as session:
            scores = np.linspace(0.1, 0.6, len(ROWS))
            selection_id = finish_with_results(session, done["id"], scores, [1, 4], [0, 1])
            session.commit()
        # B owns a succeeded job too, to aim A's selection id through B's own job.
        b_pool = client.post(
            "/v1/datasets?name=b.jsonl",
            content=body,
            headers={**auth(key_b), "Content-Type": "application/x-ndjson"},
        )
        b_job = client.post(
            "/v1/jobs",
            json={"pool": b_pool.json()["id"], "validation": b_pool.json()["id"]},
            headers=auth(key_b),
        ).json()
        with get_sessionmaker()() as session:
            row = session.get(Job, b_job["id"])
            assert row is not None
            row.status = "succeeded"
            owner = session.get(Job, done["id"])
            assert owner is not None
            # A's webhook endpoint, written directly: its URL check resolves names (no network).
            hook = Webhook(
                tenant_id=owner.tenant_id,
                url="https://hooks.tenant-a-s3.example/tov",
                event_types=["job.succeeded"],
                secret=new_secret(),
            )
            session.add(hook)
            session.commit()
            webhook_id = hook.id
        yield {
            "client": client,
            "a": key_a,
            "b": key_b,
            "ids": {
                "dataset_id": [pool["id"], val["id"], spare.json()["id"]],
                "job_id": [queued["id"], done["id"]],
                "selection_id": [selection_id],
                "webhook_id": [webhook_id],
            },
            "b_job": b_job["id"],
            "b_pool": b_pool.json()["id"],
            "pool_uri": _dataset_uri(pool["id"]),
            "snapshot": lambda: _snapshot(pool["id"], done["id"], queued["id"]),
        }


def _dataset_uri(dataset_id: str) -> str:
    from app.core.db import get_sessionmaker
    from app.core.models import Dataset

    with get_sessionmaker()() as session:
        row = session.get(Dataset, dataset_id)
        assert row is not None
        return row.uri


def _snapshot(*ids: str) -> dict[str, Any]:
    """Everything tenant A owns, as plain data, to compare before and after the attack."""
    from app.core.db import get_sessionmaker
    from app.core.models import Dataset, Job, JobEvent, Selection, Webhook

    with get_sessionmaker()() as session:
        jobs = session.scalars(select(Job).where(Job.id.in_(ids))).all()
        tenant = jobs[0].tenant_id
        return {
            "datasets": sorted(
                (d.id, d.name, d.sha256, d.uri)
                for d in session.scalars(select(Dataset).where(Dataset.tenant_id == tenant))
            ),
            "jobs": sorted(
                (j.id, j.status, j.cancel_requested, j.attempt, j.progress)
                for j in session.scalars(select(Job).where(Job.tenant_id == tenant))
            ),
            "events": session.scalar(
                select(__import__("sqlalchemy").func.count())
                .select_from(JobEvent)
                .join(Job, Job.id == JobEvent.job_id)
                .where(Job.tenant_id == tenant)
            ),
            "webhooks": sorted(
                (w.id, w.url, w.secret)
                for w in session.scalars(select(Webhook).where(Webhook.tenant_id == tenant))
            ),
            "selections": sorted(
                (s.id, s.status, s.size)
                for s in session.scalars(
                    select(Selection)
                    .join(Job, Job.id == Selection.job_id)
                    .where(Job.tenant_id == tenant)
                )
            ),
        }


def _all_routes() -> Iterator[Any]:
    """Every route of the app, also those of included routers (documented or not)."""
    from app.main import create_app

    stack = list(create_app().routes)
    while stack:
        route = stack.pop()
        inner = getattr(route, "original_router", None)
        if inner is not None:
            stack.extend(inner.routes)
        elif getattr(route, "path", None):
            yield route


def id_routes() -> list[tuple[str, list[str]]]:
    """(path template, its id parameters) for every route of the app that carries an id."""
    routes = set()
    for route in _all_routes():
        params = [p for p in re.findall(r"{(\w+)}", route.path) if p.endswith("_id")]
        if params:
            routes.add((route.path, tuple(params)))
    return sorted((path, list(params)) for path, params in routes)


def _bodies(path: str, method: str) -> list[Any]:
    if method not in ("POST", "PUT", "PATCH"):
        return [None]
    return [None, {}, {"budget": 1}, {"budget": 0.5, "strategy": "score-only", "num_bins": 2}]


def _leaks(text: str, world: dict[str, Any]) -> list[str]:
    secrets = [
        "SECRET-ANSWER",
        "Secret question",
        "a-pool.jsonl",
        "a-val.jsonl",
        "tenant-a-s3",
        world["pool_uri"],
    ]
    return [s for s in secrets if s in text]


def test_the_route_inventory_covers_every_id_route(world: dict[str, Any]) -> None:
    routes = id_routes()
    names = {p for _, params in routes for p in params}
    assert names <= set(world["ids"]), f"an id parameter with no resource of A: {names}"
    assert len(routes) >= 8


def test_tenant_b_cannot_read_or_write_anything_of_tenant_a(world: dict[str, Any]) -> None:
    """Each answer to B for A's ids must be the answer to B for ids that exist nowhere: no data,
    no existence oracle. Under /v1 it must moreover be 404 or 405 (or 422 for a body that fails
    its schema before anything is looked up)."""
    client, b = world["client"], world["b"]
    before = world["snapshot"]()
    tried = 0
    for template, params in id_routes():
        for values in _combinations(params, world["ids"]):
            path = template.format(**values)
            decoys = {name: _decoy(value) for name, value in values.items()}
            decoy_path = template.format(**decoys)
            for method in METHODS:
                for body in _bodies(template, method):
                    response = client.request(method, path, headers=auth(b), json=body)
                    decoy = client.request(method, decoy_path, headers=auth(b), json=body)
                    tried += 1
                    where = (method, path, body, response.text)
                    assert not _leaks(response.text, world), where
                    assert response.status_code == decoy.status_code, where
                    assert _masked(response.text, values) == _masked(decoy.text, decoys), where
                    if template.startswith("/v1/"):
                        # 422 only for a body that fails its schema, before any lookup.
                        assert response.status_code in (404, 405, 422), where
                        if response.status_code == 422:
                            assert response.json()["code"] == "invalid_request", where
    print(f"S3: {tried} cross-tenant requests (and as many decoys), 0 leaks")
    assert tried >= 100
    assert world["snapshot"]() == before, "tenant B changed tenant A's resources"


def _decoy(value: str) -> str:
    """An id of the same shape that names nothing."""
    prefix = value.split("_", 1)[0]
    return f"{prefix}_{secrets.token_hex(12)}"


def _masked(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(value, f"<{name}>")
    return text


def _combinations(params: list[str], ids: dict[str, list[str]]) -> Iterator[dict[str, str]]:
    from itertools import product

    for combo in product(*(ids[p] for p in params)):
        yield dict(zip(params, combo, strict=True))


def test_ids_of_a_in_queries_bodies_and_paths_are_refused(world: dict[str, Any]) -> None:
    client, b = world["client"], world["b"]
    before = world["snapshot"]()
    selection_id = world["ids"]["selection_id"][0]
    own_job = world["b_job"]
    for path in (
        f"/v1/jobs/{own_job}/selection",
        f"/v1/jobs/{own_job}/subset",
        f"/v1/jobs/{own_job}/selections/{selection_id}",
    ):
        for target in (None, 0, 1):
            params = {
                "selection_id": selection_id,
                **({} if target is None else {"target": target}),
            }
            response = client.get(path, params=params, headers=auth(b))
            assert response.status_code in (404, 409), (path, response.text)
            assert not _leaks(response.text, world)
    pool, val = world["ids"]["dataset_id"][:2]
    for body in (
        {"pool": pool, "validation": val},
        {"pool": pool, "validation": pool},
        {"pool": f"file://{world['pool_uri']}", "validation": val},
        {"pool": world["pool_uri"], "validation": world["pool_uri"]},
        {"pool": pool, "targets": [val, pool]},
        {"pool": world["b_pool"], "targets": [world["b_pool"], val]},
        {"pool": world["b_pool"], "targets": [world["b_pool"], f"file://{world['pool_uri']}"]},
    ):
        response = client.post("/v1/jobs", json=body, headers=auth(b))
        assert response.status_code in (404, 422), (body, response.text)
        assert not _leaks(response.text.replace(world["pool_uri"], "<uri>"), world)
    response = client.post(
        "/v1/datasets", json={"uri": f"file://{world['pool_uri']}"}, headers=auth(b)
    )
    assert response.status_code == 422, response.text
    assert "not under a configured data root" in response.json()["detail"]
    for path in ("/v1/jobs", "/v1/datasets", f"/v1/jobs/{own_job}/selections"):
        response = client.get(path, headers=auth(b))
        assert response.status_code in (200, 409), (path, response.text)
        text = response.text
        for ids in world["ids"].values():
            assert not any(i in text for i in ids), (path, text)
        assert not _leaks(text, world)
    assert world["snapshot"]() == before


def test_tenant_a_still_sees_its_own_resources(world: dict[str, Any]) -> None:
    client, a = world["client"], world["a"]
    for dataset_id in world["ids"]["dataset_id"]:
        assert client.get(f"/v1/datasets/{dataset_id}", headers=auth(a)).status_code == 200
    for job_id in world["ids"]["job_id"]:
        assert client.get(f"/v1/jobs/{job_id}", headers=auth(a)).status_code == 200
    done = world["ids"]["job_id"][1]
    selection = client.get(f"/v1/jobs/{done}/selection", headers=auth(a))
    assert selection.status_code == 200, selection.text
    assert [json.loads(line)["index"] for line in selection.text.splitlines()] == [1, 4]
