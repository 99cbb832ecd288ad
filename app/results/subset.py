"""The selected rows of a pool as a downloadable file: JSONL, CSV or Parquet, streamed.

Rows come from `pool_rows` (found as the engine numbers them, read as the engine reads them);
this module decides what each output format holds (see `iter_subset`).
"""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.results.export import BATCH_ROWS, ExportFormat
from app.results.pool_rows import (
    PoolFile,
    csv_cells,
    csv_record,
    jsonl_lines,
    parquet_batches,
    parquet_records,
    parquet_schema,
    wanted_rows,
)

PIECE_BYTES = 1 << 20  # streamed pieces of about this size


def iter_subset(pool: PoolFile, indices: np.ndarray, fmt: ExportFormat) -> Iterator[bytes]:
    """The selected pool rows, in pool order, as `fmt`, in one streamed pass over the pool.

    A row is what the engine reads (see `pool_rows`). JSONL: one object per row, keys in the
    pool's order, JSON columns of a CSV pool decoded (a JSONL pool's own lines are passed on as
    they are). CSV: the pool's columns as the header; strings as they are, null as an empty cell,
    any other value (a `messages` list, a number) as JSON text (a CSV pool's own cells are passed
    on as they are). Parquet: a Parquet pool's own schema and values; for JSONL or CSV pools,
    Arrow's types inferred from the values (a column whose values cannot share one type holds
    their JSON text).
    """
    wanted = wanted_rows(indices)
    if pool.file_format == "parquet":
        schema = parquet_schema(pool.path)
        batches = parquet_batches(pool.path, wanted)
        if fmt == "parquet":
            yield from _parquet_pieces(schema, batches)
            return
        records = (row for batch in batches for row in parquet_records(batch))
        yield from _rows_as(records, list(schema.names), fmt)
    elif pool.file_format == "csv":
        cells = csv_cells(pool.path, wanted)
        header = next(cells, None)
        if header is None:
            return
        if fmt == "csv":
            yield from _csv_pieces(header, cells)
            return
        yield from _rows_as((csv_record(header, row) for row in cells), header, fmt)
    else:
        lines = jsonl_lines(pool.path, wanted)
        if fmt == "jsonl":
            yield from _joined(lines)
            return
        yield from _rows_as((json.loads(line) for line in lines), pool.columns, fmt)


def _rows_as(
    rows: Iterator[dict[str, Any]], columns: list[str], fmt: ExportFormat
) -> Iterator[bytes]:
    """Row dicts written as `fmt`; `columns` (the pool's, in order) are the CSV header or the
    Parquet columns, and a row's missing value there is null (CSV: an empty cell)."""
    if fmt == "jsonl":
        yield from _joined(_json_line(row) for row in rows)
        return
    if not columns:  # a dataset stored before its columns were recorded: learn them here
        materialised = list(rows)
        columns = list(dict.fromkeys(name for row in materialised for name in row))
        rows = iter(materialised)
    if fmt == "csv":
        yield from _csv_pieces(columns, ([_csv_cell(row.get(c)) for c in columns] for row in rows))
    else:
        yield from _parquet_from_rows(rows, columns)


def _joined(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Pieces gathered into chunks of about PIECE_BYTES (one small write per row is slow)."""
    batch: list[bytes] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= PIECE_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
    yield b"".join(batch)


def _plain(value: Any) -> Any:
    """A value JSON cannot hold as it is, as text: dates and times in ISO 8601, decimals as
    written, bytes as UTF-8 (base64 when they are not text)."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, (decimal.Decimal, datetime.timedelta)):
        return str(value)
    raise TypeError(f"a {type(value).__name__} value has no JSON form")


def _json_line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, default=_plain) + "\n").encode()


def _csv_cell(value: Any) -> str:
    """A CSV cell: strings as they are, null empty, anything else as JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float, list, dict)):
        return json.dumps(value, ensure_ascii=False, default=_plain)
    return str(_plain(value))


def _csv_pieces(header: list[str], rows: Iterator[list[str]]) -> Iterator[bytes]:
    """A CSV file (RFC 4180 quoting, so a newline inside a cell stays inside it) in pieces."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow(row)
        if out.tell() >= PIECE_BYTES:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


class _Sink(io.RawIOBase):
    """A write-only file that hands its bytes out as they come; `tell` counts every byte
    written, so the Parquet footer's offsets stay right after a hand-out."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        self.written += len(self.parts[-1])
        return len(self.parts[-1])

    def tell(self) -> int:
        return self.written

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _parquet_pieces(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """Batches of one schema as a Parquet file, a row group per BATCH_ROWS rows, streamed."""
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= BATCH_ROWS:
            writer.write_table(pa.Table.from_batches(pending, schema))
            pending, count = [], 0
            yield sink.take()
    if pending:
        writer.write_table(pa.Table.from_batches(pending, schema))
    writer.close()
    yield sink.take()


def _parquet_from_rows(rows: Iterator[dict[str, Any]], columns: list[str]) -> Iterator[bytes]:
    """Row dicts as a Parquet file. Its footer needs one schema for every row, known only after
    the last one, so the rows are gathered column-wise (Arrow, BATCH_ROWS at a time) first."""
    tables: list[pa.Table] = []
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= BATCH_ROWS:
            tables.append(_arrow_table(chunk, columns))
            chunk = []
    if chunk or not tables:
        tables.append(_arrow_table(chunk, columns))
    buffer = io.BytesIO()
    pq.write_table(_concatenated_tables(tables), buffer)
    yield buffer.getvalue()


def _arrow_table(rows: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    return pa.table({name: _arrow_column([row.get(name) for row in rows]) for name in columns})


def _arrow_column(values: list[Any]) -> pa.Array:
    """Values as one Arrow array; values of mixed types as their JSON text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _json_texts(values)


def _json_texts(values: list[Any]) -> pa.Array:
    return pa.array(
        [None if v is None else json.dumps(v, ensure_ascii=False, default=_plain) for v in values],
        pa.string(),
    )


def _concatenated_tables(tables: list[pa.Table]) -> pa.Table:
    """One table; a column typed differently in two batches holds JSON text in all of them."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    for name in tables[0].column_names:
        types = {t.schema.field(name).type for t in tables} - {pa.null()}
        if len(types) > 1:
            tables = [
                t.set_column(
                    t.column_names.index(name), name, _json_texts(t.column(name).to_pylist())
                )
                for t in tables
            ]
    return pa.concat_tables(tables, promote_options="permissive")
