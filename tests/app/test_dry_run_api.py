"""`POST /v1/jobs` with `"dry_run": true` on the real services (PostgreSQL, Redis) and the real
tiny model: an estimate, and nothing written or queued; the same refusals as a real create."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.app.test_datasets_api import auth, upload
from tests.service_fixtures import REDIS_URL, make_key

ROWS = [
    {"prompt": f"What is {i} plus {i}? Say it in words please.", "completion": f"It is {2 * i}."}
    for i in range(24)
]
CHAT = [
    {
        "messages": [
            {"role": "user", "content": f"Name the capital of country {i}."},
            {"role": "assistant", "content": f"The capital is city {i}."},
        ]
    }
    for i in range(6)
]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _queued() -> int:
    return int(redis.Redis.from_url(REDIS_URL).llen(os.environ["TOV_TASK_QUEUE"]))


@pytest.fixture()
def datasets(client: Any, api_key: str, installed_tiny_model: Path) -> tuple[str, str]:
    pool = upload(client, api_key, _jsonl(ROWS)).json()["id"]
    validation = upload(client, api_key, _jsonl(CHAT), name="val.jsonl").json()["id"]
    return pool, validation


def _dry(client: Any, key: str, body: dict[str, Any]) -> Any:
    return client.post("/v1/jobs", json={**body, "dry_run": True}, headers=auth(key))


def test_a_dry_run_creates_no_job_and_queues_nothing(
    client: Any, api_key: str, datasets: tuple[str, str], service_dirs: dict[str, Path]
) -> None:
    pool, validation = datasets
    body = {"pool": pool, "validation": validation, "selection": {"budget": 6}}
    body["tov"] = {"rounds": 2, "batch_size": 4}
    file_ref = service_dirs["data"] / "dry-val.jsonl"
    file_ref.write_bytes(_jsonl(CHAT))
    queued = _queued()
    listed = len(client.get("/v1/datasets", headers=auth(api_key)).json())
    answer = _dry(client, api_key, {**body, "validation": f"file://{file_ref}"})
    assert answer.status_code == 200, answer.text
    estimate = answer.json()
    assert "Location" not in answer.headers
    assert estimate["dry_run"] is True and estimate["model"] == "tiny-llama"
    assert estimate["rows"] == {
        "pool": 24,
        "validation": 6,
        "budget": 6,
        "base_size": 3,
        "rounds": 2,
    }
    assert estimate["passes"]["backward_row_passes"] == 2 * (3 + 6)  # L x (|U| + |Z_val|)
    assert estimate["passes"]["forward_row_passes"] > 2 * 2 * 21  # + 2 passes over R a round
    assert estimate["time"]["seconds"] > 0 and estimate["memory"]["peak_bytes"] > 0
    assert estimate["fits"] is True and estimate["device_class"] == "cpu"
    assert estimate["pool_cache"]["enabled"] is True
    assert estimate["pool_cache"]["pool_encoding"] is False
    # nothing written, nothing queued: no job, no dataset row for the file:// reference
    assert client.get("/v1/jobs", headers=auth(api_key)).json()["items"] == []
    assert len(client.get("/v1/datasets", headers=auth(api_key)).json()) == listed
    assert _queued() == queued
    # ... while the same body without dry_run does create and queue one (the measure works)
    created = client.post("/v1/jobs", json=body, headers=auth(api_key))
    assert created.status_code == 202, created.text
    assert len(client.get("/v1/jobs", headers=auth(api_key)).json()["items"]) == 1
    assert _queued() == queued + 1


def test_the_token_counts_are_the_engines(
    client: Any, api_key: str, datasets: tuple[str, str], installed_tiny_model: Path
) -> None:
    """Counted with the model's tokenizer after the engine's truncation: equal to the engine's."""
    from tov_engine.data.encoding import encode_rows
    from tov_engine.model.loading import load_tokenizer

    pool, validation = datasets
    tokenizer = load_tokenizer(installed_tiny_model)
    for max_length in (512, 12):
        answer = _dry(
            client,
            api_key,
            {"pool": pool, "validation": validation, "max_length": max_length},
        ).json()
        for name, rows in (("pool", ROWS), ("validation", CHAT)):
            engine = encode_rows(tokenizer, iter(rows), max_length=max_length)
            counted = answer["tokens"][name]
            assert counted["tokens"] == int(np.sum(engine.seq_lengths)), (name, max_length)
            assert counted["loss_tokens"] == int(np.sum(engine.loss_lengths)), (name, max_length)
            assert counted["truncated_rows"] == int(np.sum(engine.truncated))
    assert answer["tokens"]["pool"]["truncated_rows"] > 0  # max_length 12 cuts the prompts


def test_references_are_the_tenants_own(
    client: Any, api_key: str, datasets: tuple[str, str], tmp_path: Path
) -> None:
    pool, validation = datasets
    intruder = make_key("dry-run-intruder")
    other = _dry(client, intruder, {"pool": pool, "validation": validation})
    assert other.status_code == 404
    assert other.json()["detail"].startswith(f"pool: Dataset '{pool}' does not exist")
    outside = tmp_path / "secret.jsonl"
    outside.write_bytes(_jsonl(ROWS))
    escaped = _dry(client, api_key, {"pool": pool, "validation": f"file://{outside}"})
    assert escaped.status_code in (403, 404, 422), escaped.text
    assert escaped.json()["detail"].startswith("validation:")


def test_bad_parameters_get_the_create_refusals(
    client: Any, api_key: str, datasets: tuple[str, str]
) -> None:
    pool, validation = datasets
    base = {"pool": pool, "validation": validation}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"colour": "red"}, 422, "colour"),
        ({"selection": {"budget": 2.5}}, 422, "whole number"),
        ({"model": "no-such-model"}, 422, "not installed"),
        ({"selection": {"budget": 100}}, 422, "exceeds the pool of 24 rows"),
        ({"tov": {"base_size": 24}}, 422, "leaves no row to score"),
        ({"validation": "https://example.com/v.jsonl"}, 422, "remote reference"),
        ({"pool": "ds_missing"}, 404, "pool: Dataset 'ds_missing'"),
    ]
    queued = _queued()
    for change, status, words in cases:
        answer = _dry(client, api_key, {**base, **change})
        assert answer.status_code == status, (change, answer.text)
        assert words in json.dumps(answer.json()), (change, answer.text)
    assert _queued() == queued
    assert client.get("/v1/jobs", headers=auth(api_key)).json()["items"] == []


def test_the_cli_dry_run(
    client: Any, api_key: str, datasets: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tov jobs create --dry-run` through the client and the real API: the estimate, no job."""
    from typer.testing import CliRunner

    from tov_client import Client, cli

    pool, validation = datasets
    tov = Client(api_key=api_key, http_client=client)
    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    args = ["jobs", "create", "--pool", pool, "--validation", validation, "--budget", "6"]
    args += ["--tov", "rounds=2", "--max-length", "64", "--dry-run"]
    queued = _queued()
    as_json = CliRunner().invoke(cli.app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    estimate = json.loads(as_json.stdout)
    assert estimate["dry_run"] is True
    assert estimate["rows"]["budget"] == 6 and estimate["rows"]["rounds"] == 2
    shown = CliRunner().invoke(cli.app, args)
    assert shown.exit_code == 0, shown.output
    assert "no job was created" in shown.stdout and "wall time" in shown.stdout
    assert client.get("/v1/jobs", headers=auth(api_key)).json()["items"] == []
    assert _queued() == queued
