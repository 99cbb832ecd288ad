"""S6: no plaintext API key at rest: not in a database dump, not in the API's logs.

Keys are created with `tov-admin keys create` (a real process, as an operator would) and used
against real uvicorn processes, whose whole output is captured:
- a strict run: uvicorn's access log on, `--log-level debug`, TOV_LOG_LEVEL=DEBUG (so SQL
  statements and their parameters are logged too);
- a run with the production flags (app.launcher's api_command), where a careless client also puts
  the key in the query string and the path.
Requests succeed and fail in every way we can think of (good key, revoked key, wrong scheme, key
in a refused body field or file, 404, 409, 415, 422). (A client that stores its key as data, e.g.
in a job's metadata, stores it on purpose: that is not tested.) Then `pg_dump` of the whole test
database and both logs are searched for each key and for its secret part (the text after the
visible prefix). The dump must hold the prefixes and hashes (a real dump of the keys), never a key.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.helpers import running_api

REPO = Path(__file__).resolve().parents[2]


def _admin(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "app.admin", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def _create_key(env: dict[str, str], tenant: str) -> str:
    out = _admin(env, "keys", "create", "--tenant", tenant)
    keys = re.findall(r"tov_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}", out)
    assert len(keys) == 1, out
    return keys[0]


def _exercise(url: str, key: str, revoked: str, *, careless: bool) -> list[int]:
    """Every kind of request with the keys; returns the statuses seen."""
    statuses = []
    good = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        body = b'{"prompt": "p", "completion": "c"}\n'
        up = client.post(
            "/v1/datasets?name=s6.jsonl",
            content=body,
            headers={**good, "Content-Type": "application/x-ndjson"},
        )
        dataset = up.json()["id"]
        job = client.post(
            "/v1/jobs",
            json={"pool": dataset, "validation": dataset},
            headers={**good, "Idempotency-Key": "s6-1"},
        )
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/v1/datasets", {"headers": good}),
            ("GET", f"/v1/jobs/{job.json()['id']}", {"headers": good}),
            ("GET", "/v1/jobs/job_missing", {"headers": good}),
            ("GET", f"/v1/jobs/{job.json()['id']}/selection", {"headers": good}),
            ("POST", "/v1/jobs", {"headers": good, "json": {"pool": key, "validation": key}}),
            ("POST", "/v1/datasets", {"headers": good, "json": {"uri": f"file:///{key}"}}),
            ("POST", "/v1/datasets", {"headers": good, "json": {"uri": f"https://{key}/x"}}),
            (
                "POST",
                "/v1/datasets",
                {"headers": {**good, "Content-Type": "image/png"}, "content": b"x"},
            ),
            (
                "POST",
                "/v1/datasets",
                {
                    "headers": {
                        **good,
                        "Content-Encoding": "gzip",
                        "Content-Type": "application/x-ndjson",
                    },
                    "content": b"x",
                },
            ),
            (
                "POST",
                "/v1/datasets?name=bad.jsonl",
                {
                    "headers": {**good, "Content-Type": "application/x-ndjson"},
                    "content": key.encode(),
                },
            ),
            ("GET", "/v1/jobs", {"headers": {"Authorization": f"Bearer {revoked}"}}),
            ("GET", "/v1/jobs", {"headers": {"Authorization": f"Basic {key}"}}),
            ("GET", "/v1/jobs", {"headers": {"Authorization": key}}),
            ("GET", "/v1/jobs", {"headers": {"Authorization": f"Bearer {key}x"}}),
            ("GET", "/v1/jobs", {"headers": {"Authorization": f"Bearer {key[:-1]}"}}),
            ("GET", "/v1/jobs", {"headers": {"X-Api-Key": key}}),
            (
                "GET",
                "/v1/jobs",
                {"headers": {"Authorization": f"Bearer {key}", "Cookie": f"key={key}"}},
            ),
            ("DELETE", "/v1/jobs/job_missing", {"headers": good}),
            ("GET", "/metrics", {"headers": good}),
            ("GET", "/readyz", {"headers": good}),
        ]
        if careless:
            requests += [
                ("GET", f"/v1/jobs?api_key={key}", {"headers": good}),
                ("GET", f"/v1/jobs/{key}", {"headers": good}),
                ("GET", f"/v1/datasets?key={key}", {}),
            ]
        for method, path, kwargs in requests:
            statuses.append(client.request(method, path, **kwargs).status_code)
    return statuses


def _secret_part(key: str) -> str:
    return key.split("_", 2)[2]


@pytest.fixture(scope="module")
def keys(service_env: dict[str, str]) -> dict[str, str]:
    key = _create_key(service_env, "s6-tenant")
    other = _create_key(service_env, "s6-other")
    revoked = _create_key(service_env, "s6-revoked")
    _admin(service_env, "keys", "revoke", revoked.split("_")[1])
    return {"key": key, "other": other, "revoked": revoked}


def test_no_plaintext_key_in_logs_or_database_dump(
    keys: dict[str, str], service_env: dict[str, str], tmp_path: Path
) -> None:
    strict_env = {**service_env, "TOV_LOG_LEVEL": "DEBUG"}
    strict_log = tmp_path / "strict.log"
    with running_api(strict_env, strict_log, args=("--log-level", "debug")) as api:
        strict = _exercise(api.url, keys["key"], keys["revoked"], careless=False)
    prod_log = tmp_path / "production.log"
    with running_api(service_env, prod_log) as api:
        prod = _exercise(api.url, keys["other"], keys["revoked"], careless=True)
    for statuses in (strict, prod):
        assert {200, 401, 404, 409, 415, 422} <= set(statuses), statuses
    logs = {"strict": strict_log.read_text(), "production": prod_log.read_text()}
    assert "GET /v1/jobs" in logs["strict"], "the strict run must have an access log"
    assert '"level": "DEBUG"' in logs["strict"], "the strict run must log at DEBUG"
    dump = _pg_dump(service_env["TOV_DATABASE_URL"], tmp_path / "dump.sql")
    for name, key in keys.items():
        prefix = key.split("_")[1]
        assert prefix in dump, f"the dump does not hold the key rows ({name})"
        for where, text in {**logs, "pg_dump": dump}.items():
            assert key not in text, f"{name} key in {where}"
            assert _secret_part(key) not in text, f"{name} key's secret part in {where}"
    sizes = {where: len(text) for where, text in logs.items()}
    print(
        "S6",
        json.dumps(
            {"log_bytes": sizes, "dump_bytes": len(dump), "requests": len(strict) + len(prod)}
        ),
    )


def _pg_dump(url: str, out: Path) -> str:
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    subprocess.run(["pg_dump", "--no-owner", "--file", str(out), dsn], check=True, timeout=120)
    text = out.read_text()
    assert "CREATE TABLE public.api_key" in text and "COPY public.api_key" in text
    return text
