"""Issue 15 (defect 6): GET /v1/datasets pages with a keyset cursor on (created_at, id) instead of
stopping at 100 rows. The body stays a list; the cursor comes in X-Next-Cursor and Link."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.app.test_datasets_api import auth, upload
from tests.service_fixtures import make_key

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def tenant_with_datasets(count: int, *, tie_every: int = 4) -> tuple[str, list[str]]:
    """A new tenant and `count` dataset rows of its own, written straight to the database (the
    API would take minutes for a few hundred uploads). Groups of `tie_every` rows share one
    created_at, so the id alone orders them. Returns the key and the ids, newest first."""
    from sqlalchemy import select

    from app.core.db import get_sessionmaker
    from app.core.models import Dataset, Tenant

    name = f"paging-{secrets.token_hex(4)}"
    key = make_key(name)
    with get_sessionmaker()() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == name))
        assert tenant is not None
        rows = [
            Dataset(
                id=f"ds_page{secrets.token_hex(6)}",
                tenant_id=tenant.id,
                name=f"d{i}.jsonl",
                uri=f"/nowhere/d{i}.jsonl",
                file_format="jsonl",
                row_format="text",
                rows=1,
                size_bytes=10,
                sha256="0" * 64,
                columns=["text"],
                created_at=BASE + timedelta(seconds=i // tie_every),
            )
            for i in range(count)
        ]
        session.add_all(rows)
        session.commit()
        newest_first = sorted(rows, key=lambda d: (d.created_at, d.id), reverse=True)
        return key, [d.id for d in newest_first]


def pages(client: Any, key: str, limit: int | None) -> list[list[str]]:
    """Every page's ids, following X-Next-Cursor until it is absent."""
    found: list[list[str]] = []
    params: dict[str, Any] = {} if limit is None else {"limit": limit}
    while True:
        response = client.get("/v1/datasets", params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        found.append([d["id"] for d in response.json()])
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in response.headers
            return found
        params = {**params, "cursor": cursor}
        assert len(found) < 1000, "the cursor never ends"


@pytest.mark.parametrize("limit", [None, 7, 4, 1])
def test_every_dataset_once_in_order_across_pages_with_ties(client: Any, limit: int | None) -> None:
    key, expected = tenant_with_datasets(230)
    other_key, other_ids = tenant_with_datasets(5)
    got = pages(client, key, limit)
    size = 100 if limit is None else limit
    assert [len(p) for p in got[:-1]] == [size] * (len(got) - 1)
    flat = [i for page in got for i in page]
    assert flat == expected  # newest first, each exactly once, ties broken by id
    assert not set(flat) & set(other_ids)  # only the tenant's own
    assert [i for p in pages(client, other_key, limit) for i in p] == other_ids


def test_the_link_header_leads_to_the_next_page(client: Any) -> None:
    key, expected = tenant_with_datasets(9)
    first = client.get("/v1/datasets?limit=5", headers=auth(key))
    link = first.headers["Link"]
    assert link.startswith("<") and link.endswith('>; rel="next"')
    url = link[1 : link.index(">")]
    assert "limit=5" in url and f"cursor={first.headers['X-Next-Cursor']}" in url
    second = client.get(url, headers=auth(key))
    assert [d["id"] for d in first.json() + second.json()] == expected
    assert "X-Next-Cursor" not in second.headers


def test_a_page_neither_repeats_nor_skips_when_datasets_come_and_go(client: Any) -> None:
    key, expected = tenant_with_datasets(12)
    first = client.get("/v1/datasets?limit=5", headers=auth(key))
    cursor = first.headers["X-Next-Cursor"]
    body = b'{"text": "new"}\n'
    newer = upload(client, key, body, name="newer.jsonl").json()["id"]  # newest of all
    rest = pages_from(client, key, cursor, limit=5)
    assert [d["id"] for d in first.json()] + rest == expected
    assert newer not in rest
    listed = [i for p in pages(client, key, 50) for i in p]
    assert listed == [newer, *expected]


def pages_from(client: Any, key: str, cursor: str, *, limit: int) -> list[str]:
    ids: list[str] = []
    while cursor:
        response = client.get(
            "/v1/datasets", params={"limit": limit, "cursor": cursor}, headers=auth(key)
        )
        ids += [d["id"] for d in response.json()]
        cursor = response.headers.get("X-Next-Cursor", "")
    return ids


def test_the_default_page_keeps_the_old_answer_of_at_most_100(client: Any) -> None:
    key, expected = tenant_with_datasets(101)
    response = client.get("/v1/datasets", headers=auth(key))
    assert isinstance(response.json(), list)
    assert [d["id"] for d in response.json()] == expected[:100]
    assert response.headers["X-Next-Cursor"]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        "%%%",
        _b64("no separator"),
        _b64("yesterday|ds_x"),
        _b64("2026-01-01T00:00:00|ds_x"),  # no offset
        _b64("2026-01-01T00:00:00+00:00|ds_\x00x"),
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
        "x" * 201,
    ],
)
def test_a_bad_cursor_is_a_422(client: Any, api_key: str, cursor: str) -> None:
    response = client.get("/v1/datasets", params={"cursor": cursor}, headers=auth(api_key))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "cursor" in response.json()["detail"]


@pytest.mark.parametrize("limit", ["0", "501", "-1", "many"])
def test_a_bad_limit_is_a_422(client: Any, api_key: str, limit: str) -> None:
    response = client.get("/v1/datasets", params={"limit": limit}, headers=auth(api_key))
    assert response.status_code == 422, response.text
    assert "limit" in response.json()["detail"]


def test_another_tenants_cursor_shows_nothing_of_theirs(client: Any) -> None:
    key_a, ids_a = tenant_with_datasets(6)
    key_b, ids_b = tenant_with_datasets(6)
    cursor_a = client.get("/v1/datasets?limit=2", headers=auth(key_a)).headers["X-Next-Cursor"]
    page = client.get("/v1/datasets", params={"cursor": cursor_a}, headers=auth(key_b)).json()
    assert (
        page and {d["id"] for d in page} <= set(ids_b) and not {d["id"] for d in page} & set(ids_a)
    )
