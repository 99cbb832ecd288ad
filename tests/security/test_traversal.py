"""S4 (paths half): >= 30 traversal paths, 0 reads outside the configured roots.

Server-side paths are accepted only when their real path (after `realpath`) lies under a data
root. An outside folder holds a valid dataset with a marker; the data root holds symlinks out of
it (to that file, to its folder, to /etc/passwd), a symlink loop and a FIFO. Every path below is
sent as a dataset registration and as a job's pool; each must be refused with 422, no answer may
carry the marker, and no file outside the roots may be opened: Python's `open` audit event records
every path the process opens while the requests run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.helpers import OpenRecorder
from tests.service_fixtures import make_key

MARKER = "OUTSIDE-THE-ROOT-MARKER"
FORBIDDEN_FILES = (
    "/etc/passwd",
    "/etc/shadow",
    "/etc/hostname",
    "/proc/self/environ",
    "/proc/self/cmdline",
    "/dev/zero",
    "/dev/urandom",
    "/proc/self/mem",
)


@pytest.fixture(scope="module")
def layout(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Path]]:
    root = service_dirs["data"]
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.jsonl"
    secret.write_text(json.dumps({"text": MARKER}) + "\n")
    inside = root / "inside.jsonl"
    inside.write_text(json.dumps({"text": "fine"}) + "\n")
    made = {
        "link-out.jsonl": secret,
        "dir-link": outside,
        "link-etc.jsonl": Path("/etc/passwd"),
        "loop-a.jsonl": root / "loop-b.jsonl",
        "loop-b.jsonl": root / "loop-a.jsonl",
        "link-in.jsonl": inside,
    }
    for name, target in made.items():
        (root / name).unlink(missing_ok=True)
        (root / name).symlink_to(target)
    fifo = root / "fifo.jsonl"
    if not fifo.exists():
        os.mkfifo(fifo)
    (root / "sub").mkdir(exist_ok=True)
    yield {"root": root, "outside": outside, "secret": secret, "inside": inside}
    for name in [*made, "fifo.jsonl", "inside.jsonl"]:
        (root / name).unlink(missing_ok=True)


def traversal_paths(root: Path, outside: Path) -> list[str]:
    rel_out = os.path.relpath(outside, root)
    up = "/".join([".."] * (len(root.parts) + 2))
    return [
        f"file://{root}/{rel_out}/secret.jsonl",
        f"{root}/{rel_out}/secret.jsonl",
        f"{root}/{up}/etc/passwd",
        f"file://{root}/../../../../../../etc/passwd",
        f"file://{outside}/secret.jsonl",
        f"{outside}/secret.jsonl",
        "/etc/passwd",
        "file:///etc/passwd",
        "file:///etc/shadow",
        "file:///proc/self/environ",
        "file:///proc/self/cmdline",
        "file:///proc/self/mem",
        "file:///proc/self/root/etc/passwd",
        "file:///dev/zero",
        "file:///dev/urandom",
        f"file://{root}/link-out.jsonl",
        f"file://{root}/dir-link/secret.jsonl",
        f"file://{root}/link-etc.jsonl",
        f"file://{root}/loop-a.jsonl",
        f"file://{root}/fifo.jsonl",
        f"file://{root}",
        f"file://{root}/sub",
        f"file://{root}/%2e%2e/{rel_out}/secret.jsonl",
        f"file://{root}/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        f"file://{root}/..%2f..%2f..%2fetc/passwd",
        f"file://{root}/..%252f..%252fetc/passwd",
        f"{root}/..\\..\\..\\etc\\passwd",
        f"{root}/inside.jsonl\x00.txt",
        f"file://{root}\x00/../../etc/passwd",
        "../../etc/passwd",
        "secret.jsonl",
        "file://localhost/etc/passwd",
        f"file://{root}/./../{rel_out}/./secret.jsonl",
        f"{root}//..//..//..//..//etc//passwd",
        f"{root}/sub/../../{rel_out}/secret.jsonl",
        f"file:{root}/../secret.jsonl",
        "FILE:///etc/passwd",
        f"{root}/" + "a" * 300,
        f"{root}/" + "x/" * 3000,
        f"{root}/\udc80.jsonl",
        f"{root}/\u2025/{rel_out}/secret.jsonl",
        f"{root}/{'.' * 3}/secret.jsonl",
        f"file://{root}/link-out.jsonl/",
        f"~/{rel_out}/secret.jsonl",
        "$HOME/../../etc/passwd",
    ]


def test_at_least_thirty_traversal_paths(layout: dict[str, Path]) -> None:
    assert len(traversal_paths(layout["root"], layout["outside"])) >= 30


def _opened_outside(opened: list[str], outside: Path) -> list[str]:
    bad = []
    real_outside = os.path.realpath(outside)
    for path in opened:
        real = os.path.realpath(path) if not path.startswith("/proc/self/fd") else path
        if real.startswith(real_outside + os.sep) or real in FORBIDDEN_FILES:
            bad.append(path)
    return bad


def test_no_path_reads_outside_the_roots(layout: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    recorder = OpenRecorder.get()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        headers = {"Authorization": f"Bearer {make_key('traversal')}"}
        refused = 0
        with recorder.recording() as opened:
            for path in traversal_paths(layout["root"], layout["outside"]):
                for response in (
                    _post(client, "/v1/datasets", {"uri": path}, headers),
                    _post(client, "/v1/jobs", {"pool": path, "validation": path}, headers),
                ):
                    assert response.status_code == 422, (path, response.text)
                    assert MARKER not in response.text
                    assert "root:" not in response.text  # /etc/passwd content
                    refused += 1
        assert _opened_outside(opened, layout["outside"]) == []
        assert refused >= 60
        # The recorder works: a registration inside the root opens the file.
        with recorder.recording() as opened:
            ok = client.post(
                "/v1/datasets",
                json={"uri": f"file://{layout['root']}/link-in.jsonl"},
                headers=headers,
            )
        assert ok.status_code == 201, ok.text
        assert str(layout["inside"].resolve()) in {os.path.realpath(p) for p in opened}


def _post(client: Any, url: str, body: dict[str, str], headers: dict[str, str]) -> Any:
    """JSON with ASCII escapes, so lone surrogates travel as the client would send them."""
    return client.post(
        url,
        content=json.dumps(body).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )


def test_ui_static_files_do_not_traverse(layout: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        for name in (
            "..%2f..%2fconfig.py",
            "..%2F..%2F..%2Fetc%2Fpasswd",
            "%2e%2e%2fmain.py",
            "dashboard.js%00.py",
            "....//....//etc/passwd",
            "..\\..\\main.py",
        ):
            response = client.get(f"/ui/static/{name}")
            assert response.status_code == 404, (name, response.text)
            assert "root:" not in response.text and "get_settings" not in response.text


def test_a_path_inside_the_root_still_works(layout: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        headers = {"Authorization": f"Bearer {make_key('traversal-ok')}"}
        for uri in (
            f"file://{layout['inside']}",
            str(layout["inside"]),
            f"file://{layout['root']}/sub/../inside.jsonl",
        ):
            response = client.post("/v1/datasets", json={"uri": uri}, headers=headers)
            assert response.status_code == 201, (uri, response.text)
            assert response.json()["rows"] == 1
