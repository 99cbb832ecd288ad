"""Tenancy of server files (issue 15, defect 2): tenant B cannot register or read tenant A's files
under the per-tenant data roots by any spelling.

The deployment here lists one per-tenant root template (`.../tenants/{tenant}`) and one plain
root (`.../plain`, per tenant too: `.../plain/NAME`); the session's data folder stays a shared
root. A's folder holds a file with a marker; B tries `..`, percent-encoding, double slashes, case,
symlinks (to the file and to A's folder), A's name under B's root and the template itself, as a
registration and as a job's pool: every answer is 422 and carries no marker. A and B each reach
their own files, both reach the shared root, nobody reaches a file left directly in a plain root.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service_fixtures import make_key

MARKER = "TENANT-A-PRIVATE-MARKER"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"text": text}) + "\n")
    return path


@pytest.fixture()
def world(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app

    suffix = secrets.token_hex(3)
    a, b = f"roots-a-{suffix}", f"roots-b-{suffix}"
    tenants, plain = tmp_path / "tenants", tmp_path / "plain"
    monkeypatch.setattr(get_settings(), "data_roots", [tenants / "{tenant}", plain])
    files = {
        "a": _write(tenants / a / "pool.jsonl", MARKER),
        "a_plain": _write(plain / a / "pool.jsonl", MARKER),
        "b": _write(tenants / b / "own.jsonl", "b's row"),
        "loose": _write(plain / "loose.jsonl", MARKER),
        "upper": _write(tenants / a.upper() / "pool.jsonl", MARKER),
        "template": _write(tenants / "{tenant}" / "pool.jsonl", MARKER),
        "shared": _write(service_dirs["data"] / f"shared-{suffix}.jsonl", "for everyone"),
    }
    (tenants / b / "link.jsonl").symlink_to(files["a"])
    (tenants / b / "a-folder").symlink_to(tenants / a)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield {
            "client": client,
            "a": make_key(a),
            "b": make_key(b),
            "names": (a, b),
            "tenants": tenants,
            "plain": plain,
            "files": files,
        }


def _register(client: Any, key: str, uri: str) -> Any:
    return client.post(
        "/v1/datasets",
        content=json.dumps({"uri": uri}).encode(),
        headers={**auth(key), "Content-Type": "application/json"},
    )


def spellings_of_a(world: dict[str, Any]) -> list[str]:
    (a, b), tenants, plain = world["names"], world["tenants"], world["plain"]
    a_file = world["files"]["a"]
    return [
        f"file://{a_file}",
        str(a_file),
        f"file://{tenants}/{b}/../{a}/pool.jsonl",
        f"{tenants}/{b}/../{a}/pool.jsonl",
        f"file://{tenants}/{b}/%2e%2e/{a}/pool.jsonl",
        f"file://{tenants}/{b}/..%2f{a}/pool.jsonl",
        f"file://{tenants}/{b}%2f..%2f{a}%2fpool.jsonl",
        f"file://{tenants}//{a}//pool.jsonl",
        f"file:///{tenants}/{a}/pool.jsonl",
        f"{tenants}/{b}//..//{a}/pool.jsonl",
        f"file://{tenants}/{b}/./../{a}/./pool.jsonl",
        f"file://{tenants}/{a.upper()}/pool.jsonl",
        f"file://{tenants}/{b}/../{a.upper()}/pool.jsonl",
        f"FILE://{tenants}/{a}/pool.jsonl",
        f"file://{tenants}/{b}/link.jsonl",
        f"file://{tenants}/{b}/a-folder/pool.jsonl",
        f"file://{tenants}/{b}/{a}/pool.jsonl",
        f"file://{tenants}/{b}/../{b}/../{a}/pool.jsonl",
        f"file://{tenants}/{{tenant}}/pool.jsonl",
        f"file://{plain}/{a}/pool.jsonl",
        f"file://{plain}/{b}/../{a}/pool.jsonl",
        f"file://{plain}/loose.jsonl",
        f"file://localhost{tenants}/{a}/pool.jsonl",
    ]


def test_b_cannot_register_a_files_by_any_spelling(world: dict[str, Any]) -> None:
    client, b = world["client"], world["b"]
    mine = _register(client, b, f"file://{world['files']['b']}")
    assert mine.status_code == 201, mine.text
    for uri in spellings_of_a(world):
        for response in (
            _register(client, b, uri),
            client.post("/v1/jobs", json={"pool": uri, "validation": uri}, headers=auth(b)),
        ):
            assert response.status_code == 422, (uri, response.text)
            assert MARKER not in response.text
    refused = _register(client, b, f"file://{world['files']['a']}").json()["detail"]
    assert "not under a configured data root" in refused
    assert "TOV_DATA_ROOTS" in refused and "TOV_SHARED_DATA_ROOTS" in refused
    listed = client.get("/v1/datasets", headers=auth(b)).json()
    assert [d["name"] for d in listed] == ["own.jsonl"]


def test_each_tenant_reaches_its_own_and_the_shared_files(world: dict[str, Any]) -> None:
    client, files = world["client"], world["files"]
    a, b = world["a"], world["b"]
    for uri in (f"file://{files['a']}", str(files["a_plain"]), f"file://{files['shared']}"):
        response = _register(client, a, uri)
        assert response.status_code == 201, (uri, response.text)
    assert _register(client, b, f"file://{files['shared']}").status_code == 201
    # A file left directly in a plain (per-tenant) root belongs to nobody.
    assert _register(client, a, f"file://{files['loose']}").status_code == 422


def test_a_tenant_name_that_is_not_a_folder_name_gets_the_shared_roots_only(
    world: dict[str, Any],
) -> None:
    client, files, tenants = world["client"], world["files"], world["tenants"]
    odd = make_key(f"../{world['names'][0]}")
    for uri in (
        f"file://{files['a']}",
        f"file://{tenants}/../tenants/{world['names'][0]}/pool.jsonl",
    ):
        response = _register(client, odd, uri)
        assert response.status_code == 422, response.text
        assert "not a plain folder name" in response.json()["detail"]
    assert _register(client, odd, f"file://{files['shared']}").status_code == 201


def test_roots_for_a_tenant() -> None:
    from app.core.config import Settings
    from app.datasets.sources.tenancy import data_roots_for, tenant_segment

    settings = Settings(
        data_roots=[Path("/srv/t-{tenant}/in"), Path("/srv/plain")],
        shared_data_roots=[Path("/srv/public")],
    )
    assert data_roots_for(settings, "acme") == [
        Path("/srv/t-acme/in"),
        Path("/srv/plain/acme"),
        Path("/srv/public"),
    ]
    assert data_roots_for(settings, "a/../b") == [Path("/srv/public")]
    for name in ("..", ".", "-x", "a b", "a/b", "a%2fb", "", "é"):
        assert tenant_segment(name) is None, name
    assert tenant_segment("Acme.Corp_1-x") == "Acme.Corp_1-x"
