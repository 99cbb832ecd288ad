"""The `precision` job parameter from the client and the `tov` CLI (issue 14)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.client.test_client import job_json, make
from tov_client import cli


def test_create_job_sends_the_precision() -> None:
    seen: list[httpx.Request] = []
    tov = make([httpx.Response(202, json=job_json("queued"))] * 2, seen, [])
    tov.create_job("ds_1", "ds_2", precision="bfloat16")
    assert json.loads(seen[0].content)["precision"] == "bfloat16"
    tov.create_job("ds_1", "ds_2")
    assert "precision" not in json.loads(seen[1].content)  # the server's default (auto)


def test_the_cli_option_reaches_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    tov = make([httpx.Response(202, json=job_json("queued"))], seen, [])
    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    args = ["jobs", "create", "--pool", "ds_1", "--validation", "ds_2"]
    result = CliRunner().invoke(cli.app, [*args, "--precision", "float32", "--json"])
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(seen[0].content)
    assert body["precision"] == "float32"
