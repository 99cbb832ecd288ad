"""`Client.list_models()` and `tov models` against the real API in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.app.test_models_api import LLAMA, install
from tov_client import ApiError, Client, ModelInfo, cli


@pytest.fixture()
def tov(client: Any, api_key: str) -> Client:
    return Client(api_key=api_key, http_client=client)


def test_list_models_and_the_cli(
    tov: Client, service_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    install(service_dirs["models"], "client-listed", LLAMA)
    listed = tov.list_models()
    assert listed.default_model == "tiny-llama"
    mine = next(m for m in listed.items if m.name == "client-listed")
    assert isinstance(mine, ModelInfo) and mine.model_type == "llama"
    assert mine.parameters_source == "config" and mine.parameters and not mine.has_tokenizer

    monkeypatch.setattr(cli.State, "client", lambda self: tov)
    runner = CliRunner()
    as_json = runner.invoke(cli.app, ["models", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert "client-listed" in {m["name"] for m in json.loads(as_json.stdout)["items"]}
    table = runner.invoke(cli.app, ["models"])
    assert table.exit_code == 0 and "client-listed" in table.stdout


def test_an_unknown_model_fails_the_create_with_the_known_ones(
    tov: Client, service_dirs: dict[str, Path]
) -> None:
    install(service_dirs["models"], "client-known", LLAMA)
    pool = tov.upload_dataset(b'{"prompt": "a", "completion": "b"}\n' * 3, name="p.jsonl")
    with pytest.raises(ApiError) as caught:
        tov.create_job(pool, pool, model="client-unknown")
    error = caught.value
    assert (error.status, error.code) == (422, "invalid_input")
    assert "'client-known'" in error.detail and error.errors[0]["field"] == "model"
