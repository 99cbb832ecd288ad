"""CSV datasets: a header naming the row format's columns, then one row per example.

`messages`, `tokens` and `tags` cells hold JSON (strict, as for JSONL). Rows are numbered as the
engine numbers them: data rows from 1 (the header is not a row), blank lines skipped; each error
also gives the physical line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.datasets.validation.report import DatasetSummary
from app.datasets.validation.rows import MAX_COLUMNS, RowChecker, detect_row_format
from app.datasets.validation.strict_json import parse_json_text

# CSV cells are strings; these columns carry JSON there (the engine decodes them too).
JSON_IN_CSV = ("messages", "tokens", "tags")


class _LineTooLong(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _BadUtf8(Exception):
    def __init__(self, line: int, start: int) -> None:
        self.line, self.start = line, start


def _csv_lines(path: Path, max_line_bytes: int, position: list[int]) -> Iterator[str]:
    """Physical lines of a CSV file, decoded strictly; `position[0]` tracks the line number."""
    with path.open("rb") as handle:
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            position[0] += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise _LineTooLong(position[0])
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _BadUtf8(position[0], exc.start) from None


def check_csv(path: Path, *, name: str, max_rows: int, max_line_bytes: int) -> DatasetSummary:
    """Validate a CSV dataset; raises DatasetInvalid listing the problems."""
    checker = RowChecker(name, max_rows, unit="row")
    position = [0]
    reader = csv.reader(_csv_lines(path, max_line_bytes, position), strict=True)
    header: list[str] | None = None
    row_number = 0
    try:
        for fields in reader:
            if header is None:
                header = _csv_header(checker, fields, position[0])
            elif fields:  # a blank line is skipped: the engine's DictReader skips it too
                row_number += 1
                _check_csv_row(checker, header, fields, row_number, line=position[0])
    except _LineTooLong as exc:
        raise checker.fail(
            row_number + 1, "", f"line longer than {max_line_bytes} bytes", line=exc.line
        ) from None
    except _BadUtf8 as exc:
        raise checker.fail(
            row_number + 1, "", f"invalid UTF-8 at byte {exc.start} of the line", line=exc.line
        ) from None
    except csv.Error as exc:
        raise checker.fail(row_number + 1, "", f"malformed CSV: {exc}", line=position[0]) from None
    if header is None:
        raise checker.fail(
            0, "", "the file is empty: expected a header and at least one row", line=0
        )
    return checker.finish(path, "csv")


def _check_csv_row(
    checker: RowChecker, header: list[str], fields: list[str], number: int, *, line: int
) -> None:
    if len(fields) != len(header):
        checker.count_row(number)
        reason = f"has {len(fields)} fields; the header has {len(header)}"
        checker.error(number, "", reason, line=line)
        return
    record: dict[str, Any] = dict(zip(header, fields, strict=True))
    for key in JSON_IN_CSV:
        if key in record:
            try:
                record[key] = parse_json_text(record[key])
            except ValueError as exc:
                checker.count_row(number)
                checker.error(number, key, f"expected JSON in this cell: {exc}", line=line)
                return
    checker.check(number, record, line=line)


def _csv_header(checker: RowChecker, fields: list[str], line: int) -> list[str]:
    if not fields:
        raise checker.fail(0, "", "the first line is empty: expected a header", line=line)
    if fields[0].startswith("\ufeff"):
        raise checker.fail(
            0,
            fields[0],
            "the file starts with a byte order mark; save it as UTF-8 without BOM",
            line=line,
        )
    if len(fields) > MAX_COLUMNS:
        raise checker.fail(0, "", f"more than {MAX_COLUMNS} columns", line=line)
    seen: set[str] = set()
    for column in fields:
        if column in seen:
            raise checker.fail(0, column, "duplicate column name in the header", line=line)
        seen.add(column)
    if detect_row_format(fields) is None:
        raise checker.fail(
            0,
            "",
            "unknown row format: the header needs 'prompt' and "
            "'completion', 'text', 'messages', or 'tokens' and 'tags'",
            line=line,
        )
    return fields
