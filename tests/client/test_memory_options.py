"""The training-memory knobs from the client and the `tov` CLI (issue 14)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.client.test_client import job_json, make
from tov_client import cli


def test_create_job_sends_gradient_checkpointing() -> None:
    seen: list[httpx.Request] = []
    tov = make([httpx.Response(202, json=job_json("queued"))] * 2, seen, [])
    tov.create_job("ds_1", "ds_2", gradient_checkpointing="on")
    assert json.loads(seen[0].content)["gradient_checkpointing"] == "on"
    tov.create_job("ds_1", "ds_2")
    assert "gradient_checkpointing" not in json.loads(seen[1].content)  # the server's auto


def test_the_cli_options_reach_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    tov = make([httpx.Response(202, json=job_json("queued"))], seen, [])
    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    args = ["jobs", "create", "--pool", "ds_1", "--validation", "ds_2", "--json"]
    memory = ["--gradient-checkpointing", "off", "--train-tokens-per-micro-batch", "2048"]
    result = CliRunner().invoke(cli.app, [*args, *memory, "--tov", "rounds=2"])
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(seen[0].content)
    assert body["gradient_checkpointing"] == "off"
    assert body["tov"] == {"rounds": 2, "train_tokens_per_micro_batch": 2048}
