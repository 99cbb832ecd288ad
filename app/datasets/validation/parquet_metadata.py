"""Parquet checks that run on the footer alone, before any data page is read.

Magic bytes, footer length, declared rows, columns, row groups and uncompressed sizes (so page
compression cannot expand past a bound), then the schema: a known row format whose required
columns have usable Arrow types, nested no deeper than MAX_DEPTH.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from app.datasets.validation.report import DatasetInvalid, problem_at
from app.datasets.validation.rows import (
    MAX_COLUMNS,
    RowChecker,
    api_format_name,
    detect_row_format,
)
from app.datasets.validation.strict_json import MAX_DEPTH
from tov_formats import REQUIRED_FIELDS

PARQUET_MAGIC = b"PAR1"
PARQUET_ENCRYPTED_MAGIC = b"PARE"
MAX_PARQUET_FOOTER_BYTES = 16 * 1024 * 1024
MAX_ROW_GROUPS = 100_000
MAX_EXPANSION_RATIO = 32  # declared uncompressed bytes / file bytes
MIN_EXPANSION_ALLOWANCE = 64 * 1024 * 1024  # small files may expand to this much regardless
MAX_ROW_GROUP_BYTES = 512 * 1024 * 1024  # uncompressed, held in memory while one group is read


def check_footer(path: Path, name: str) -> int:
    """Check the magic bytes and the footer length before pyarrow parses anything."""
    size = path.stat().st_size
    if size < 12:
        raise DatasetInvalid(
            f"{name}: too small to be a Parquet file",
            [problem_at(name, "row", 0, "", f"{size} bytes is too small to be a Parquet file")],
        )
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(size - 8)
        tail = handle.read(8)
    footer_len, magic = struct.unpack("<i4s", tail)
    if magic == PARQUET_ENCRYPTED_MAGIC:
        reason = "encrypted Parquet files are not supported"
    elif head != PARQUET_MAGIC or magic != PARQUET_MAGIC:
        reason = "not a Parquet file: missing PAR1 magic at the start or the end"
    elif footer_len <= 0 or footer_len > size - 12:
        reason = f"corrupt footer: its declared length {footer_len} does not fit the file"
    elif footer_len > MAX_PARQUET_FOOTER_BYTES:
        reason = f"metadata of {footer_len} bytes exceeds {MAX_PARQUET_FOOTER_BYTES}"
    else:
        return footer_len
    raise DatasetInvalid(f"{name}: {reason}", [problem_at(name, "row", 0, "", reason)])


def arrow_message(exc: BaseException, path: Path, name: str) -> str:
    """pyarrow's message, first line, with the server path replaced by the dataset's name."""
    return (
        str(exc).replace(str(path), name).splitlines()[0][:300] if str(exc) else type(exc).__name__
    )


def check_declared_sizes(checker: RowChecker, meta: Any, size: int, max_rows: int) -> None:
    """Rows, columns, row groups and uncompressed bytes as the footer declares them."""
    if meta.num_rows > max_rows:
        raise checker.fail(
            0, "", f"the metadata declares {meta.num_rows} rows; the limit is {max_rows}"
        )
    if meta.num_columns > MAX_COLUMNS:
        raise checker.fail(0, "", f"{meta.num_columns} leaf columns; at most {MAX_COLUMNS}")
    if meta.num_row_groups > MAX_ROW_GROUPS:
        raise checker.fail(0, "", f"{meta.num_row_groups} row groups; at most {MAX_ROW_GROUPS}")
    allowance = max(MAX_EXPANSION_RATIO * size, MIN_EXPANSION_ALLOWANCE)
    total, declared_rows = 0, 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        declared_rows += group.num_rows
        total += _row_group_bytes(checker, group, i)
        if total > allowance:
            raise checker.fail(
                0,
                "",
                f"the data expands to more than {allowance} bytes "
                f"({MAX_EXPANSION_RATIO}x the file): refused as a "
                "decompression bomb",
            )
    if declared_rows != meta.num_rows:
        raise checker.fail(
            0, "", f"row groups hold {declared_rows} rows but the file declares {meta.num_rows}"
        )


def _row_group_bytes(checker: RowChecker, group: Any, i: int) -> int:
    group_bytes = 0
    for j in range(group.num_columns):
        column = group.column(j)
        uncompressed, compressed = column.total_uncompressed_size, column.total_compressed_size
        if uncompressed < 0 or compressed < 0:
            raise checker.fail(
                0, column.path_in_schema, f"row group {i}: negative size in the metadata"
            )
        group_bytes += uncompressed
    if group.num_rows < 0:
        raise checker.fail(0, "", f"row group {i}: negative row count")
    if group_bytes > MAX_ROW_GROUP_BYTES:
        raise checker.fail(
            0,
            "",
            f"row group {i} declares {group_bytes} uncompressed bytes; "
            f"at most {MAX_ROW_GROUP_BYTES}",
        )
    return group_bytes


def schema_row_format(checker: RowChecker, schema: Any) -> str:
    """The row format (a tov_formats name) the schema's columns announce, with usable types."""
    names = list(schema.names)
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise checker.fail(0, duplicate, "duplicate column name")
    row_format = detect_row_format(names)
    if row_format is None:
        raise checker.fail(
            0,
            "",
            "unknown row format: expected columns 'messages', 'prompt' "
            f"and 'completion', 'text', or 'tokens' and 'tags'; found {names[:20]}",
        )
    for column in REQUIRED_FIELDS[row_format]:
        if column not in names:
            shown = api_format_name(row_format)
            raise checker.fail(0, column, f"missing column (the file is in {shown} format)")
        problem = _column_type_problem(column, schema.field(column).type)
        if problem:
            raise checker.fail(0, column, problem)
    if _arrow_type_depth(schema) > MAX_DEPTH:
        raise checker.fail(0, "", f"the schema nests deeper than {MAX_DEPTH} levels")
    return row_format


def _is_str(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or getattr(pa.types, "is_string_view", lambda _: False)(arrow_type)
    )


def _is_list(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type))


def _column_type_problem(column: str, arrow_type: Any) -> str | None:
    """Why a required column's Arrow type cannot hold its row format, or None."""
    import pyarrow as pa

    if column in ("text", "prompt", "completion"):
        return None if _is_str(arrow_type) else f"column type is {arrow_type}; expected string"
    if column == "messages":
        return _messages_type_problem(arrow_type)
    if column == "tokens":
        ok = _is_list(arrow_type) and _is_str(arrow_type.value_type)
        return None if ok else f"column type is {arrow_type}; expected list<string>"
    if column == "tags":
        ok = _is_list(arrow_type) and (
            _is_str(arrow_type.value_type) or pa.types.is_integer(arrow_type.value_type)
        )
        return None if ok else f"column type is {arrow_type}; expected list<string> or list<int>"
    return None


def _messages_type_problem(arrow_type: Any) -> str | None:
    import pyarrow as pa

    value = arrow_type.value_type if _is_list(arrow_type) else None
    if value is None or not pa.types.is_struct(value):
        return f"column type is {arrow_type}; expected list<struct<role, content>>"
    names = {value.field(i).name: value.field(i).type for i in range(value.num_fields)}
    for key in ("role", "content"):
        if key not in names or not _is_str(names[key]):
            return (
                f"column type is {arrow_type}; expected list<struct<role: string, content: string>>"
            )
    return None


def _arrow_type_depth(schema: Any) -> int:
    """The deepest nesting of the schema's types (iterative: no recursion on hostile input)."""
    deepest = 0
    stack = [(schema.field(i).type, 1) for i in range(len(schema.names))]
    while stack:
        arrow_type, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        stack.extend(
            (arrow_type.field(i).type, depth + 1)
            for i in range(getattr(arrow_type, "num_fields", 0))
        )
    return deepest
