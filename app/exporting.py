"""Streamed downloads as JSONL, CSV or Parquet from columns of numpy arrays."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
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
