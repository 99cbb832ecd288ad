"""Dataset files: JSONL, Parquet and CSV, one example per row (formats in `tov_engine.data.rows`).

Row numbers are 1-based over the data rows (for CSV the header is not a row; for JSONL, row k is
line k).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tov_engine.data.rows import FORMATS, check_row, detect_format
from tov_engine.errors import DataError

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
        if not isinstance(record, dict):  # check_row rejects a non-object whatever the format
            check_row(file, row, record, fmt or FORMATS[0])
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


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
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
    return DatasetInfo(format=fmt, rows=rows, sha256=file_sha256(path), columns=columns)
