"""The selected rows of a pool file, found the way the engine numbers them, in one streamed pass.

Row k of a pool is the row the engine (`tov_engine.data.files.read_rows`) reads k-th, which is
what a selection's indices count:
- JSONL: line k (blank lines are allowed only at the end); the row is the parsed object.
- CSV: the k-th data row after the header, blank lines skipped (as `csv.DictReader` skips them);
  a quoted newline is inside a cell, not a row break. Cells are strings; the `messages`, `tokens`
  and `tags` cells hold JSON, decoded by `csv_record` as the engine decodes them.
- Parquet: row k across the row groups; values as pyarrow's `to_pylist` gives them.

Each reader walks the file once, keeps only the wanted rows and stops after the last one; row
groups of a Parquet pool without a wanted row are not decoded. Nothing holds the pool whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.core.artifacts import open_dataset

# CSV cells are strings; these columns carry JSON there (as in the engine and the validation).
JSON_IN_CSV = ("messages", "tokens", "tags")
READ_BATCH_ROWS = 8192


@dataclass(frozen=True)
class PoolFile:
    """A pool as stored: where its file is, its file format and its columns (every column the
    validation saw, in first-seen order: a JSONL pool's rows may each name fewer)."""

    path: Path | str  # a local path, or an object of the S3 artifact store (app.core.artifacts)
    file_format: str  # jsonl | csv | parquet
    columns: list[str]


def wanted_rows(indices: np.ndarray) -> np.ndarray:
    """The selected row indices as a sorted array without repeats: pool order."""
    return np.unique(np.asarray(indices, dtype=np.int64))


def jsonl_lines(path: Path | str, wanted: np.ndarray) -> Iterator[bytes]:
    """The raw lines of the wanted rows, each ending in a newline."""
    targets = iter(wanted.tolist())
    next_row = next(targets, None)
    if next_row is None:
        return
    with open_dataset(str(path)) as handle:
        for index, line in enumerate(handle):
            if index == next_row:
                yield line if line.endswith(b"\n") else line + b"\n"
                next_row = next(targets, None)
                if next_row is None:
                    return


def csv_cells(path: Path | str, wanted: np.ndarray) -> Iterator[list[str]]:
    """The header first (always), then the cells of the wanted data rows."""
    with io.TextIOWrapper(open_dataset(str(path)), encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        yield header
        targets = iter(wanted.tolist())
        next_row = next(targets, None)
        index = 0
        for fields in reader:
            if next_row is None:
                return
            if not fields:  # a blank line is not a row: the engine's DictReader skips it
                continue
            if index == next_row:
                yield fields
                next_row = next(targets, None)
            index += 1


def csv_record(header: list[str], fields: list[str]) -> dict[str, Any]:
    """One CSV row as the engine reads it: a dict in header order, JSON columns decoded."""
    record: dict[str, Any] = dict(zip(header, fields, strict=False))
    for key in JSON_IN_CSV:
        if key in record:
            record[key] = json.loads(record[key])
    return record


def parquet_schema(path: Path | str) -> pa.Schema:
    """The pool's Arrow schema (from the footer only)."""
    with open_dataset(str(path)) as handle:
        return pq.ParquetFile(handle).schema_arrow


def parquet_batches(path: Path | str, wanted: np.ndarray) -> Iterator[pa.RecordBatch]:
    """The wanted rows in batches, in pool order; only row groups holding one are decoded
    (an S3 pool: only their byte ranges are read)."""
    if len(wanted) == 0:
        return
    with open_dataset(str(path)) as handle:
        yield from _batches(pq.ParquetFile(handle), wanted)


def _batches(parquet: pq.ParquetFile, wanted: np.ndarray) -> Iterator[pa.RecordBatch]:
    start = 0
    for group in range(parquet.metadata.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        low, high = np.searchsorted(wanted, [start, start + size])
        if low < high:
            yield from _taken(parquet, group, start, wanted[low:high])
        start += size
        if start > wanted[-1]:
            return


def _taken(
    parquet: pq.ParquetFile, group: int, start: int, wanted: np.ndarray
) -> Iterator[pa.RecordBatch]:
    """The wanted rows (pool indices, all in this row group) of row group `group`."""
    offset = start
    batches = parquet.iter_batches(
        batch_size=READ_BATCH_ROWS, row_groups=[group], use_threads=False
    )
    for batch in batches:
        low, high = np.searchsorted(wanted, [offset, offset + batch.num_rows])
        if low < high:
            yield batch.take(pa.array(wanted[low:high] - offset))
        offset += batch.num_rows


def parquet_records(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows of a Parquet batch as dicts in schema order; a float NaN becomes None (JSON has no
    NaN)."""
    columns = []
    for column in batch.columns:
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema).to_pylist()
