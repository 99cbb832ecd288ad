"""Dataset files: JSONL, Parquet and CSV, one example per row, in four formats.

Formats (detected from the first row; every row must then follow it):
- "chat": {"messages": [{"role", "content"}, ...]}, loss on assistant turns;
- "prompt_completion": {"prompt", "completion"}, loss on the completion;
- "text": {"text"}, loss on every token;
- "token_classification": {"tokens": [...], "tags": [...]}, string or int tags.
Extra columns are kept in the row dicts and ignored by the engine. Row numbers are 1-based over the
data rows (for CSV the header is not a row; for JSONL, row k is line k).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tov_engine.errors import DataError

FORMATS = ("chat", "prompt_completion", "text", "token_classification")
ROLES = ("system", "user", "assistant", "tool")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
# CSV cells are strings; these columns carry JSON lists there.
JSON_IN_CSV = ("messages", "tokens", "tags")


@dataclass(frozen=True)
class DatasetInfo:
    """What `inspect_dataset` learned about a file."""

    format: str  # one of FORMATS
    rows: int
    sha256: str  # of the file's bytes
    columns: tuple[str, ...]  # columns of the first row, in file order


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a row's keys announce, or None."""
    if "messages" in row:
        return "chat"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "tokens" in row and "tags" in row:
        return "token_classification"
    if "text" in row:
        return "text"
    return None


def _kind(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if value is None:
        return "null"
    return type(value).__name__


def _text(file: str, row: int, name: str, value: Any, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise DataError(file, row, name, f"expected a string, got {_kind(value)}")
    if not allow_empty and not value.strip():
        raise DataError(file, row, name, "empty text")


def _check_chat(file: str, row: int, messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(file, row, "messages", f"expected a non-empty list, got {_kind(messages)}")
    has_answer = False
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(file, row, where, f"expected an object, got {_kind(message)}")
        for key in ("role", "content"):
            if key not in message:
                raise DataError(file, row, f"{where}.{key}", "missing field")
        if message["role"] not in ROLES:
            raise DataError(file, row, f"{where}.role", f"unknown role {message['role']!r}")
        _text(file, row, f"{where}.content", message["content"], allow_empty=True)
        has_answer |= message["role"] == "assistant" and bool(message["content"].strip())
    if not has_answer:
        raise DataError(file, row, "messages", "no non-empty assistant turn to train on")


def _check_tagged(file: str, row: int, tokens: Any, tags: Any) -> None:
    for name, value in (("tokens", tokens), ("tags", tags)):
        if not isinstance(value, list) or not value:
            raise DataError(file, row, name, f"expected a non-empty list, got {_kind(value)}")
    if len(tokens) != len(tags):
        raise DataError(file, row, "tags", f"{len(tags)} tags for {len(tokens)} tokens")
    for i, token in enumerate(tokens):
        _text(file, row, f"tokens[{i}]", token)
    kinds = {type(t) for t in tags}
    if not (kinds <= {str} or kinds <= {int}):
        found = ", ".join(sorted({_kind(t) for t in tags}))
        raise DataError(file, row, "tags", f"tags must be all strings or all ints, got {found}")


def check_row(file: str, row: int, record: Any, fmt: str) -> None:
    """Raise DataError unless `record` is a valid example of format `fmt`.

    Args:
        file: path for messages. row: 1-based row number. record: the parsed row. fmt: the format.
    """
    if not isinstance(record, dict):
        raise DataError(file, row, "", f"expected a JSON object, got {_kind(record)}")
    required = {
        "chat": ("messages",),
        "prompt_completion": ("prompt", "completion"),
        "text": ("text",),
        "token_classification": ("tokens", "tags"),
    }[fmt]
    for key in required:
        if key not in record:
            raise DataError(file, row, key, f"missing field (the file is in {fmt} format)")
    if fmt == "chat":
        _check_chat(file, row, record["messages"])
    elif fmt == "prompt_completion":
        _text(file, row, "prompt", record["prompt"], allow_empty=True)
        _text(file, row, "completion", record["completion"])
    elif fmt == "text":
        _text(file, row, "text", record["text"])
    else:
        _check_tagged(file, row, record["tokens"], record["tags"])


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    file, blank_at = str(path), 0
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                blank_at = blank_at or line_no  # blank lines are fine only at the very end
                continue
            if blank_at:
                raise DataError(file, blank_at, "", "empty line inside the file")
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(file, line_no, "", f"malformed JSON: {exc.msg}") from None


def _parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq  # lazy: only Parquet users pay for the import

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(str(path), 0, "", f"not a readable Parquet file: {exc}") from None
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    file = str(path)
    with path.open("r", encoding="utf-8", newline="") as handle:
        for row, record in enumerate(csv.DictReader(handle), start=1):
            for key in JSON_IN_CSV:
                cell = record.get(key)
                if cell is None:
                    continue
                try:
                    record[key] = json.loads(cell)
                except json.JSONDecodeError:
                    raise DataError(file, row, key, "expected a JSON list in this cell") from None
            yield row, record


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(str(path), 0, "", "file not found")
    if suffix in JSONL_SUFFIXES:
        return _jsonl_records(path)
    if suffix in PARQUET_SUFFIXES:
        return _parquet_records(path)
    if suffix in CSV_SUFFIXES:
        return _csv_records(path)
    known = JSONL_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES
    raise DataError(str(path), 0, "", f"unknown file type {suffix!r}; expected one of {known}")


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream the validated rows of a dataset file, in file order.

    Args:
        path: a .jsonl/.ndjson, .parquet or .csv file.
    Returns:
        An iterator of row dicts (CSV list columns already JSON-decoded). Raises DataError naming
        file, row, field and reason at the first bad row, or for an empty file.
    """
    file, fmt, row = str(path), None, 0
    for row, record in _records(Path(path)):
        if not isinstance(record, dict):
            raise DataError(file, row, "", f"expected a JSON object, got {_kind(record)}")
        if fmt is None:
            fmt = detect_format(record)
            if fmt is None:
                raise DataError(
                    file,
                    row,
                    "",
                    "unknown format: expected messages, prompt+completion, text, or tokens+tags",
                )
        check_row(file, row, record, fmt)
        yield record
    if row == 0:
        raise DataError(file, 0, "", "the file holds no rows")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_dataset(path: str | Path) -> DatasetInfo:
    """Validate every row of a dataset file and describe it.

    Args:
        path: the dataset file.
    Returns:
        DatasetInfo(format, rows, sha256, columns). Raises DataError on the first bad row.
    """
    rows, fmt, columns = 0, "", tuple[str, ...]()
    for record in read_rows(path):
        if rows == 0:
            fmt, columns = detect_format(record) or "", tuple(record)
        rows += 1
    return DatasetInfo(format=fmt, rows=rows, sha256=_sha256(Path(path)), columns=columns)
