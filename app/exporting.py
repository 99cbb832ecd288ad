"""Streamed downloads as JSONL, CSV or Parquet from columns of numpy arrays."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ExportFormat = Literal["jsonl", "csv", "parquet"]
MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
BATCH_ROWS = 8192


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _batches(columns: dict[str, np.ndarray | list[Any]]) -> Iterator[dict[str, list[Any]]]:
    n = len(next(iter(columns.values()))) if columns else 0
    for start in range(0, n, BATCH_ROWS):
        yield {
            name: [_json_value(v) for v in np.asarray(col[start : start + BATCH_ROWS]).tolist()]
            for name, col in columns.items()
        }


def iter_export(columns: dict[str, np.ndarray | list[Any]], fmt: ExportFormat) -> Iterator[bytes]:
    """Yield the file in pieces; NaN scores become null (JSON) or empty (CSV)."""
    names = list(columns)
    if fmt == "parquet":
        table = pa.table({name: pa.array(np.asarray(col)) for name, col in columns.items()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        yield buffer.getvalue()
        return
    if fmt == "csv":
        yield (",".join(names) + "\n").encode()
    for batch in _batches(columns):
        rows = zip(*(batch[name] for name in names), strict=True)
        if fmt == "jsonl":
            yield "".join(
                json.dumps(dict(zip(names, row, strict=True))) + "\n" for row in rows
            ).encode()
        else:
            yield "".join(
                ",".join("" if v is None else str(v) for v in row) + "\n" for row in rows
            ).encode()


def _selected_lines(pool_path: Path, wanted: set[int]) -> Iterator[bytes]:
    """The raw JSONL lines of the wanted row indices, in pool order, in one pass."""
    with pool_path.open("rb") as handle:
        for index, line in enumerate(handle):
            if index in wanted:
                yield line if line.endswith(b"\n") else line + b"\n"


def iter_subset(pool_path: Path, indices: np.ndarray, fmt: ExportFormat) -> Iterator[bytes]:
    """The selected rows themselves, in the pool's own row format, ready to fine-tune on."""
    wanted = {int(i) for i in indices}
    if fmt == "jsonl":
        batch: list[bytes] = []
        for line in _selected_lines(pool_path, wanted):
            batch.append(line)
            if len(batch) >= BATCH_ROWS:
                yield b"".join(batch)
                batch = []
        yield b"".join(batch)
        return
    rows = [json.loads(line) for line in _selected_lines(pool_path, wanted)]
    if fmt == "parquet":
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        yield buffer.getvalue()
        return
    names = list(dict.fromkeys(name for row in rows for name in row))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(names)
    for row in rows:
        writer.writerow([_csv_cell(row.get(name)) for name in names])
    yield out.getvalue().encode()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
