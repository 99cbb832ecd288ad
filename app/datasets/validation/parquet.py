"""Parquet datasets: the footer and schema first (see `parquet_metadata`), then every row.

Errors name the 1-based data row (0 when the problem is the whole file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.datasets.validation.parquet_metadata import (
    MAX_PARQUET_FOOTER_BYTES,
    arrow_message,
    check_declared_sizes,
    check_footer,
    schema_row_format,
)
from app.datasets.validation.report import DatasetInvalid, DatasetSummary
from app.datasets.validation.rows import RowChecker
from tov_formats import REQUIRED_FIELDS

PARQUET_BATCH_ROWS = 1024


def check_parquet(path: Path, *, name: str, max_rows: int) -> DatasetSummary:
    """Validate a Parquet dataset: footer and metadata first (sizes, rows, schema), then rows."""
    import pyarrow.parquet as pq

    check_footer(path, name)
    checker = RowChecker(name, max_rows, unit="row")
    limits = {
        "thrift_string_size_limit": MAX_PARQUET_FOOTER_BYTES,
        "thrift_container_size_limit": 1_000_000,
    }
    try:
        parquet = pq.ParquetFile(path, **limits)  # reads the footer only
        meta = parquet.metadata
        schema = parquet.schema_arrow
    except Exception as exc:  # pyarrow raises several types for a damaged footer
        reason = f"unreadable Parquet metadata: {arrow_message(exc, path, name)}"
        raise checker.fail(0, "", reason) from None
    check_declared_sizes(checker, meta, path.stat().st_size, max_rows)
    checker.row_format = schema_row_format(checker, schema)
    checker.columns = dict.fromkeys(schema.names)
    rows = _check_rows(checker, parquet, path)
    if rows != meta.num_rows:
        raise checker.fail(rows, "", f"the file holds {rows} rows but declares {meta.num_rows}")
    return checker.finish(path, "parquet")


def _check_rows(checker: RowChecker, parquet: Any, path: Path) -> int:
    """Decode every column (the engine reads them all), check the required ones; rows read."""
    import pyarrow as pa

    assert checker.row_format is not None
    required = list(REQUIRED_FIELDS[checker.row_format])
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, use_threads=False):
            if batch.num_columns != len(checker.columns):
                raise checker.fail(row + 1, "", "a row group does not match the schema")
            columns = {c: batch.column(c).to_pylist() for c in required}
            for k in range(batch.num_rows):
                row += 1
                checker.count_row(row)
                record = {c: columns[c][k] for c in required}
                checker.check_fields(row, record, checker.row_format)
    except DatasetInvalid:
        raise
    except (pa.ArrowException, OSError, ValueError, MemoryError, IndexError) as exc:
        raise checker.fail(
            row + 1, "", f"unreadable Parquet data: {arrow_message(exc, path, checker.name)}"
        ) from None
    return row
