"""Dataset files: formats, JSONL/CSV/Parquet, and precise DataErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.engine.conftest import WriteRows
from tov_engine import DataError, inspect_dataset, read_rows

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


@pytest.mark.parametrize(
    "row,fmt",
    [
        (CHAT, "chat"),
        ({"prompt": "p", "completion": "c", "id": 3}, "prompt_completion"),
        ({"text": "hello", "source": "x"}, "text"),
        ({"tokens": ["Alice", "runs"], "tags": ["B-PER", "O"]}, "token_classification"),
        ({"tokens": ["Alice", "runs"], "tags": [1, 0]}, "token_classification"),
    ],
)
def test_inspect_detects_format(write_jsonl: WriteRows, row: dict, fmt: str) -> None:
    path = write_jsonl("d.jsonl", [row, row])
    info = inspect_dataset(path)
    assert (info.format, info.rows, info.columns) == (fmt, 2, tuple(row))
    assert len(info.sha256) == 64
    assert list(read_rows(path)) == [row, row]


BAD = [
    ('{"text": "a"}\n{"text": ', 2, "", "malformed JSON"),
    ('{"text": "a"}\n{"prompt": "a", "completion": ""}', 2, "text", "missing field"),
    ('{"prompt": "a", "completion": ""}', 1, "completion", "empty text"),
    ('{"text": 5}', 1, "text", "expected a string, got int"),
    ('{"text": NaN}', 1, "text", "got NaN"),
    ('{"text": "   "}', 1, "text", "empty text"),
    ("[1, 2]", 1, "", "expected a JSON object"),
    ('{"foo": 1}', 1, "", "unknown format"),
    ('{"messages": []}', 1, "messages", "non-empty list"),
    ('{"messages": [{"role": "user", "content": "q"}]}', 1, "messages", "no non-empty assistant"),
    ('{"messages": [{"role": "bot", "content": "q"}]}', 1, "messages[0].role", "unknown role"),
    ('{"messages": [{"role": "user"}]}', 1, "messages[0].content", "missing field"),
    ('{"tokens": ["a"], "tags": ["O", "O"]}', 1, "tags", "2 tags for 1 tokens"),
    ('{"tokens": ["a", "b"], "tags": ["O", 1]}', 1, "tags", "all strings or all ints"),
    ('{"tokens": ["a", ""], "tags": [0, 1]}', 1, "tokens[1]", "empty text"),
    ('{"text": "a"}\n\n{"text": "b"}', 2, "", "empty line"),
]


@pytest.mark.parametrize("content,row,field,reason", BAD)
def test_bad_rows_name_file_row_field_reason(
    tmp_path: Path, content: str, row: int, field: str, reason: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        inspect_dataset(path)
    err = info.value
    assert (err.row, err.field) == (row, field)
    assert reason in err.reason
    assert str(path) in str(err) and reason in str(err)
    assert (f"row {row}" in str(err)) and (field in str(err))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        inspect_dataset(empty)
    with pytest.raises(DataError, match="file not found"):
        inspect_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unknown file type"):
        (tmp_path / "x.txt").write_text("a")
        inspect_dataset(tmp_path / "x.txt")


def test_trailing_blank_lines_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n\n\n')
    assert inspect_dataset(path).rows == 1


def test_csv_and_parquet(tmp_path: Path) -> None:
    rows = [CHAT, CHAT]
    frame = pd.DataFrame({"messages": [json.dumps(r["messages"]) for r in rows], "id": [1, 2]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert inspect_dataset(tmp_path / "d.csv").format == "chat"
    assert next(iter(read_rows(tmp_path / "d.csv")))["messages"] == CHAT["messages"]
    pd.DataFrame({"prompt": ["a", "b"], "completion": ["c", None]}).to_parquet(tmp_path / "d.pq")
    with pytest.raises(DataError) as info:
        inspect_dataset(tmp_path / "d.pq")
    assert (info.value.row, info.value.field) == (2, "completion")
    pd.DataFrame({"tokens": [["a", "b"]], "tags": [["O", "B"]]}).to_parquet(tmp_path / "t.parquet")
    assert inspect_dataset(tmp_path / "t.parquet").format == "token_classification"
    (tmp_path / "bad.csv").write_text('tokens,tags\n"[""a""]",not-json\n')
    with pytest.raises(DataError) as info:
        inspect_dataset(tmp_path / "bad.csv")
    assert (info.value.row, info.value.field) == (1, "tags")
