"""Dataset formats at the API boundary: JSONL, Parquet and CSV are accepted, stored under the
suffix the engine reads, and counted exactly as the engine counts them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.service_fixtures import make_key


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


CHAT = [
    [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    for i in range(5)
]
CASES: list[tuple[str, str, bytes, str, int, list[str]]] = [
    (
        "pc.parquet",
        "application/vnd.apache.parquet",
        _parquet(
            pa.table(
                {
                    "prompt": ["a", "b", "c"],
                    "completion": ["x", "y", "z"],
                    "source": ["s", "s", "t"],
                    "weight": [0.5, float("nan"), 1.0],
                }
            )
        ),
        "prompt_completion",
        3,
        ["prompt", "completion", "source", "weight"],
    ),
    (
        "chat.parquet",
        "application/octet-stream",
        _parquet(pa.table({"messages": CHAT})),
        "chat",
        5,
        ["messages"],
    ),
    (
        "ner.parquet",
        "application/x-parquet",
        _parquet(pa.table({"tokens": [["John", "runs"]], "tags": [[1, 0]]})),
        "tokens",
        1,
        ["tokens", "tags"],
    ),
    (
        "text.csv",
        "text/csv",
        b'text,source\nhello,a\n"multi\nline, with comma",b\n\n',
        "text",
        2,
        ["text", "source"],
    ),
    (
        "pc.csv",
        "application/octet-stream",
        b"prompt,completion\nq,a\n,only completion\n",
        "prompt_completion",
        2,
        ["prompt", "completion"],
    ),
    (
        "ner.csv",
        "text/csv",
        b'tokens,tags\n"[""John"",""runs""]","[""B"",""O""]"\n',
        "tokens",
        1,
        ["tokens", "tags"],
    ),
    (
        "chat.csv",
        "text/csv",
        b'messages\n"[{""role"":""user"",""content"":""hi""},'
        b'{""role"":""assistant"",""content"":""yo""}]"\n',
        "chat",
        1,
        ["messages"],
    ),
    (
        "rows.jsonl",
        "application/x-ndjson",
        b'{"text": "a"}\n{"text": "b"}\n\n',
        "text",
        2,
        ["text"],
    ),
]


@pytest.fixture(scope="module")
def api(service_env: dict[str, str]) -> Any:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {make_key('formats')}"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_format_is_accepted_and_counted_like_the_engine(
    case: tuple[str, str, bytes, str, int, list[str]], api: Any
) -> None:
    from app.core.db import get_sessionmaker
    from app.core.models import Dataset
    from tov_engine.data.files import inspect_dataset

    name, content_type, body, row_format, rows, columns = case
    client, headers = api
    response = client.post(
        f"/v1/datasets?name={name}", content=body, headers={**headers, "Content-Type": content_type}
    )
    assert response.status_code == 201, response.text
    data = response.json()
    suffix = name.rsplit(".", 1)[1]
    assert (data["file_format"], data["row_format"], data["rows"]) == (suffix, row_format, rows)
    assert data["columns"] == columns
    with get_sessionmaker()() as session:
        stored = session.get(Dataset, data["id"])
        assert stored is not None
        path = Path(stored.uri)
    assert path.suffix == f".{suffix}"
    info = inspect_dataset(path)  # the engine reads what the API accepted, with the same count
    assert info.rows == rows
    assert info.sha256 == data["sha256"]


def test_parquet_and_csv_register_from_a_data_root(api: Any, service_dirs: dict[str, Path]) -> None:
    client, headers = api
    (service_dirs["data"] / "reg.parquet").write_bytes(CASES[0][2])
    (service_dirs["data"] / "reg.csv").write_bytes(CASES[3][2])
    (service_dirs["data"] / "reg.json").write_text(json.dumps({"text": "a"}) + "\n")
    for name, fmt in (("reg.parquet", "parquet"), ("reg.csv", "csv")):
        response = client.post(
            "/v1/datasets", json={"uri": f"file://{service_dirs['data'] / name}"}, headers=headers
        )
        assert response.status_code == 201, response.text
        assert response.json()["file_format"] == fmt
    refused = client.post(
        "/v1/datasets", json={"uri": str(service_dirs["data"] / "reg.json")}, headers=headers
    )
    assert refused.status_code == 422
    assert "file type is not supported" in refused.json()["detail"]


def test_parquet_is_detected_from_its_bytes_without_a_name(api: Any) -> None:
    client, headers = api
    response = client.post(
        "/v1/datasets",
        content=CASES[0][2],
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["file_format"] == "parquet"
