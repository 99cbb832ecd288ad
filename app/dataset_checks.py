"""Checks a dataset file row by row before any job may use it.

Three file formats (JSONL, Parquet, CSV) carry the four row formats the engine accepts
(ARCHITECTURE.md, "Dataset formats"). Every problem is reported as {file, line|row, field, reason}
so a user can fix the file: JSONL errors name the 1-based line, Parquet errors the 1-based data row,
CSV errors the data row (the header is not a row) and the physical line.

The checks are at least as strict as the engine's reader (`tov_engine.data`), so a dataset the API
accepts never fails later in the worker for a reason the API could have seen. Resource limits
(OWASP API4) are enforced before or while reading, never after: line length, rows, columns, JSON
nesting, sequence lengths, and for Parquet the footer and the uncompressed sizes it declares.
Compressed bodies (gzip, zstd, ...) are refused outright (415): no decompression bomb can reach a
parser. Parquet's own page compression is bounded by the declared-size checks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import InvalidInput, UnsupportedMediaType

if TYPE_CHECKING:
    from app.core.config import Settings

MAX_REPORTED_ERRORS = 20
ROW_FORMATS = ("chat", "prompt_completion", "text", "tokens")
ROLES = {"system", "user", "assistant", "tool"}

# Limits on the shape of one row (the byte limits come from Settings).
MAX_DEPTH = 32  # JSON nesting; a chat row needs 3
MAX_COLUMNS = 1000  # distinct top-level keys / columns in a file
MAX_MESSAGES = 10_000  # turns in one chat row
MAX_TOKENS = 100_000  # entries in one tokens/tags row
# Parquet: checked from the footer before any data page is read.
PARQUET_MAGIC = b"PAR1"
PARQUET_ENCRYPTED_MAGIC = b"PARE"
MAX_PARQUET_FOOTER_BYTES = 16 * 1024 * 1024
MAX_ROW_GROUPS = 100_000
MAX_EXPANSION_RATIO = 32  # declared uncompressed bytes / file bytes
MIN_EXPANSION_ALLOWANCE = 64 * 1024 * 1024  # small files may expand to this much regardless
MAX_ROW_GROUP_BYTES = 512 * 1024 * 1024  # uncompressed, held in memory while one group is read
PARQUET_BATCH_ROWS = 1024

# Magic numbers of compressed or archive containers: refused whatever the Content-Type says.
COMPRESSION_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"\x78\x01", "zlib"),
    (b"\x78\x5e", "zlib"),
    (b"\x78\x9c", "zlib"),
    (b"\x78\xda", "zlib"),
)

# What an upload's Content-Type says about its file format (None: look at the name and bytes).
CONTENT_TYPES: dict[str, str | None] = {
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines": "jsonl",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "text/csv": "csv",
    "application/csv": "csv",
    "application/octet-stream": None,
    "text/plain": None,
    "": None,
}
# File suffixes the engine reads (tov_engine.data): a registered file keeps its own name.
SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}
STORED_SUFFIX = {"jsonl": "jsonl", "parquet": "parquet", "csv": "csv"}
# CSV cells are strings; these columns carry JSON there (the engine decodes them too).
JSON_IN_CSV = ("messages", "tokens", "tags")


class DatasetInvalid(Exception):
    """The file cannot be used; `errors` holds up to MAX_REPORTED_ERRORS precise problems."""

    def __init__(self, summary: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(summary)
        self.errors = errors


@dataclass
class DatasetSummary:
    row_format: str
    rows: int
    sha256: str
    size_bytes: int
    columns: list[str] = field(default_factory=list)
    file_format: str = "jsonl"


# ---------------------------------------------------------------------------------------------
# Format detection


def sniff_compression(head: bytes) -> str | None:
    """The compression container these first bytes announce, or None."""
    for magic, name in COMPRESSION_MAGIC:
        if head.startswith(magic):
            return name
    return None


def format_for_content_type(content_type: str) -> str | None:
    """The file format a Content-Type names; None when it names none. 415 for anything else."""
    if content_type not in CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type[:100]}' is not a dataset upload; send "
            "application/x-ndjson (JSONL), application/vnd.apache.parquet or text/csv."
        )
    return CONTENT_TYPES[content_type]


def format_for_name(name: str) -> str | None:
    suffix = Path(name).suffix.lower()
    return SUFFIX_FORMATS.get(suffix)


def detect_file_format(path: Path, *, declared: str | None, name: str) -> str:
    """Decide the file format from what was declared, the name and the first bytes.

    Compressed containers are refused (415) before any parser sees them.
    """
    with path.open("rb") as handle:
        head = handle.read(8)
    compression = sniff_compression(head)
    if compression:
        raise UnsupportedMediaType(
            f"{name}: the body is {compression}-compressed; compressed uploads are refused "
            "(decompression bombs). Send the uncompressed file; Parquet may use its own "
            "internal compression."
        )
    is_parquet = head.startswith(PARQUET_MAGIC)
    # An explicit Content-Type must match the bytes; otherwise the bytes beat the name.
    chosen = declared or ("parquet" if is_parquet else format_for_name(name) or "jsonl")
    if chosen == "parquet" and not is_parquet:
        raise InvalidInput(
            f"{name}: not a Parquet file (it does not start with the PAR1 magic bytes).",
            errors=[_err(name, "row", 0, "", "not a Parquet file: missing PAR1 magic")],
        )
    if chosen != "parquet" and is_parquet:
        raise InvalidInput(
            f"{name}: the body is a Parquet file but was sent as {chosen}; send it with "
            "Content-Type application/vnd.apache.parquet.",
            errors=[_err(name, "line", 1, "", f"Parquet bytes in a {chosen} upload")],
        )
    return chosen


def validate_file(path: Path, *, name: str, file_format: str, settings: Settings) -> DatasetSummary:
    """Validate a dataset file of `file_format`; InvalidInput (422) lists the problems."""
    try:
        if file_format == "parquet":
            return check_parquet(path, name=name, max_rows=settings.max_rows)
        if file_format == "csv":
            return check_csv(
                path, name=name, max_rows=settings.max_rows, max_line_bytes=settings.max_line_bytes
            )
        return check_jsonl(
            path, name=name, max_rows=settings.max_rows, max_line_bytes=settings.max_line_bytes
        )
    except DatasetInvalid as exc:
        raise InvalidInput(str(exc), errors=exc.errors) from exc


# ---------------------------------------------------------------------------------------------
# Rows


def _err(name: str, unit: str, number: int, field_name: str, reason: str) -> dict[str, Any]:
    return {"file": name, unit: number, "field": field_name, "reason": reason}


def detect_row_format(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        return "chat"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    if "tokens" in row or "tags" in row:
        return "tokens"
    if "text" in row:
        return "text"
    return None


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def row_problems(row: Any, row_format: str) -> list[tuple[str, str]]:
    """(field, reason) pairs for everything wrong with one row of `row_format`."""
    if not isinstance(row, dict):
        return [("", f"expected a JSON object, got {_kind(row)}")]
    if row_format == "text":
        return [] if _nonempty_str(row.get("text")) else [("text", "must be a non-empty string")]
    if row_format == "prompt_completion":
        problems = []
        if not isinstance(row.get("prompt"), str):
            problems.append(("prompt", "must be a string"))
        if not _nonempty_str(row.get("completion")):
            problems.append(("completion", "must be a non-empty string"))
        return problems
    if row_format == "chat":
        return _chat_problems(row.get("messages"))
    return _token_problems(row)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _chat_problems(messages: Any) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        return [("messages", "must be a non-empty list of {role, content} objects")]
    if len(messages) > MAX_MESSAGES:
        return [("messages", f"has {len(messages)} turns; at most {MAX_MESSAGES} are allowed")]
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return [(where, "must be an object with 'role' and 'content'")]
        if message.get("role") not in ROLES:
            return [(f"{where}.role", f"must be one of {sorted(ROLES)}")]
        if not isinstance(message.get("content"), str):
            return [(f"{where}.content", "must be a string")]
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return [("messages", "needs at least one non-empty assistant turn (the loss is on it)")]
    return []


def _token_problems(row: dict[str, Any]) -> list[tuple[str, str]]:
    tokens, tags = row.get("tokens"), row.get("tags")
    if not isinstance(tokens, list) or not tokens or not all(_nonempty_str(t) for t in tokens):
        return [("tokens", "must be a non-empty list of non-empty strings")]
    if len(tokens) > MAX_TOKENS:
        return [("tokens", f"has {len(tokens)} entries; at most {MAX_TOKENS} are allowed")]
    if not isinstance(tags, list):
        return [("tags", "must be a list of strings or integers")]
    kinds = {"int" if isinstance(t, int) and not isinstance(t, bool) else type(t) for t in tags}
    if not (kinds <= {str} or kinds <= {"int"}):
        return [("tags", "must be all strings or all integers")]
    if len(tags) != len(tokens):
        return [("tags", f"has {len(tags)} entries for {len(tokens)} tokens")]
    return []


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:80]!r}")
            seen.add(key)
    return obj


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether containers nest deeper than `limit` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json_text(text: str) -> Any:
    """Strict JSON: NaN/Infinity, duplicate keys and nesting deeper than MAX_DEPTH are refused."""
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_pairs_without_duplicates
        )
    except RecursionError:
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels") from None
    if _too_deep(value):
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
    if _has_non_finite(value):  # e.g. 1e999 parses to inf
        raise ValueError("a number is out of range (Infinity is not allowed)")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff): not valid Unicode")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string holds a surrogate that is not part of a pair (the tokenizer would fail)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json_line(raw: bytes) -> Any:
    """Parse one JSONL line (UnicodeDecodeError for bad UTF-8, ValueError for bad JSON)."""
    return parse_json_text(raw.decode("utf-8"))


def _has_non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class RowChecker:
    """Accumulates the row count, the format, the columns and up to MAX_REPORTED_ERRORS problems.

    `unit` names where an error is: "line" for JSONL, "row" for Parquet and CSV.
    """

    def __init__(self, name: str, max_rows: int, unit: str = "line") -> None:
        self.name = name
        self.max_rows = max_rows
        self.unit = unit
        self.rows = 0
        self.row_format: str | None = None
        self.columns: dict[str, None] = {}
        self.errors: list[dict[str, Any]] = []

    def error(self, number: int, field_name: str, reason: str, **extra: Any) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({**_err(self.name, self.unit, number, field_name, reason), **extra})

    def fail(self, number: int, field_name: str, reason: str, **extra: Any) -> DatasetInvalid:
        """A problem that stops the check: the errors so far plus this one."""
        self.error(number, field_name, reason, **extra)
        return DatasetInvalid(self._summary(), self.errors)

    def count_row(self, number: int) -> None:
        self.rows += 1
        if self.rows > self.max_rows:
            raise self.fail(number, "", f"more than {self.max_rows} rows (the row limit)")

    def check(self, number: int, row: Any, **extra: Any) -> None:
        self.count_row(number)
        if isinstance(row, dict) and self.row_format is None:
            self.row_format = detect_row_format(row)
            if self.row_format is None:
                self.error(
                    number,
                    "",
                    "unknown row format: expected 'messages', 'prompt'/"
                    "'completion', 'text' or 'tokens'/'tags'",
                    **extra,
                )
                return
        if isinstance(row, dict):
            for name in row:
                if name not in self.columns:
                    if len(self.columns) >= MAX_COLUMNS:
                        raise self.fail(number, "", f"more than {MAX_COLUMNS} distinct columns")
                    self.columns[name] = None
        for field_name, reason in row_problems(row, self.row_format or "text"):
            self.error(number, field_name, reason, **extra)

    def _summary(self) -> str:
        first = self.errors[0]
        where = f"{self.unit} {first[self.unit]}" if first[self.unit] else "the file"
        what = f", field '{first['field']}'" if first["field"] else ""
        return (
            f"{self.name}: {len(self.errors)} problem(s); first at {where}{what}: {first['reason']}"
        )

    def finish(self, sha256: str, size_bytes: int, file_format: str = "jsonl") -> DatasetSummary:
        if self.rows == 0 and not self.errors:
            self.error(0, "", "the dataset has no rows")
        if self.errors:
            raise DatasetInvalid(self._summary(), self.errors)
        assert self.row_format is not None
        return DatasetSummary(
            self.row_format, self.rows, sha256, size_bytes, list(self.columns), file_format
        )


# ---------------------------------------------------------------------------------------------
# JSONL


def iter_jsonl(path: Path, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line) without reading more than `max_line_bytes` per line.

    A line over the limit is yielded as the empty sentinel b"" and the rest of it is skipped.
    """
    with path.open("rb") as handle:
        number = 0
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                yield number, b""  # sentinel: too long; skip the rest of the line
                while raw and not raw.endswith(b"\n"):
                    raw = handle.readline(max_line_bytes + 1)
                continue
            yield number, raw


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_jsonl(path: Path, *, name: str, max_rows: int, max_line_bytes: int) -> DatasetSummary:
    """Validate a JSONL dataset; raises DatasetInvalid listing the problems."""
    checker = RowChecker(name, max_rows)
    blank_at = 0  # blank lines are allowed only at the end: a row's index is its line's index
    for number, raw in iter_jsonl(path, max_line_bytes):
        if raw.strip() and blank_at:
            checker.error(blank_at, "", "empty line inside the file")
            blank_at = 0
        if raw == b"":
            checker.count_row(number)
            checker.error(number, "", f"line longer than {max_line_bytes} bytes")
            continue
        if not raw.strip():
            blank_at = blank_at or number
            continue
        try:
            row = parse_json_line(raw)
        except UnicodeDecodeError as exc:
            checker.count_row(number)
            checker.error(number, "", f"invalid UTF-8 at byte {exc.start}")
            continue
        except ValueError as exc:
            checker.count_row(number)
            checker.error(number, "", f"malformed JSON: {exc}")
            continue
        checker.check(number, row)
    return checker.finish(_file_sha256(path), path.stat().st_size, "jsonl")


# ---------------------------------------------------------------------------------------------
# CSV


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
    """Validate a CSV dataset: a header naming the row format's columns, then one row per example.

    `messages`, `tokens` and `tags` cells hold JSON (strict, as for JSONL). Rows are numbered as
    the engine numbers them: data rows from 1, blank lines skipped.
    """
    checker = RowChecker(name, max_rows, unit="row")
    position = [0]
    reader = csv.reader(_csv_lines(path, max_line_bytes, position), strict=True)
    header: list[str] | None = None
    row_number = 0
    try:
        for fields in reader:
            if header is None:
                header = _csv_header(checker, fields, position[0])
                continue
            if not fields:
                continue  # blank line: the engine's DictReader skips it too
            row_number += 1
            line = position[0]
            if len(fields) != len(header):
                checker.count_row(row_number)
                checker.error(
                    row_number,
                    "",
                    f"has {len(fields)} fields; the header has {len(header)}",
                    line=line,
                )
                continue
            record: dict[str, Any] = dict(zip(header, fields, strict=True))
            bad_cell = False
            for key in JSON_IN_CSV:
                if key in record:
                    try:
                        record[key] = parse_json_text(record[key])
                    except ValueError as exc:
                        checker.count_row(row_number)
                        checker.error(
                            row_number, key, f"expected JSON in this cell: {exc}", line=line
                        )
                        bad_cell = True
                        break
            if not bad_cell:
                checker.check(row_number, record, line=line)
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
    return checker.finish(_file_sha256(path), path.stat().st_size, "csv")


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
    if detect_row_format(dict.fromkeys(fields)) is None:
        raise checker.fail(
            0,
            "",
            "unknown row format: the header needs 'prompt' and "
            "'completion', 'text', 'messages', or 'tokens' and 'tags'",
            line=line,
        )
    return fields


# ---------------------------------------------------------------------------------------------
# Parquet


def _parquet_footer(path: Path, name: str) -> int:
    """Check the magic bytes and the footer length before pyarrow parses anything."""
    size = path.stat().st_size
    bad = DatasetInvalid  # local alias for brevity
    if size < 12:
        raise bad(
            f"{name}: too small to be a Parquet file",
            [_err(name, "row", 0, "", f"{size} bytes is too small to be a Parquet file")],
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
    raise bad(f"{name}: {reason}", [_err(name, "row", 0, "", reason)])


def _arrow_message(exc: BaseException, path: Path, name: str) -> str:
    return (
        str(exc).replace(str(path), name).splitlines()[0][:300] if str(exc) else type(exc).__name__
    )


def _column_type_problem(column: str, arrow_type: Any) -> str | None:
    """Why a required column's Arrow type cannot hold its row format, or None."""
    import pyarrow as pa

    def is_str(t: Any) -> bool:
        return bool(
            pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t)
        )

    def is_list(t: Any) -> bool:
        return bool(pa.types.is_list(t) or pa.types.is_large_list(t))

    if column in ("text", "prompt", "completion"):
        return None if is_str(arrow_type) else f"column type is {arrow_type}; expected string"
    if column == "messages":
        value = arrow_type.value_type if is_list(arrow_type) else None
        if value is None or not pa.types.is_struct(value):
            return f"column type is {arrow_type}; expected list<struct<role, content>>"
        names = {value.field(i).name: value.field(i).type for i in range(value.num_fields)}
        for key in ("role", "content"):
            if key not in names or not is_str(names[key]):
                return (
                    f"column type is {arrow_type}; expected list<struct<role: string, "
                    "content: string>>"
                )
        return None
    if column == "tokens":
        ok = is_list(arrow_type) and is_str(arrow_type.value_type)
        return None if ok else f"column type is {arrow_type}; expected list<string>"
    if column == "tags":
        ok = is_list(arrow_type) and (
            is_str(arrow_type.value_type) or pa.types.is_integer(arrow_type.value_type)
        )
        return None if ok else f"column type is {arrow_type}; expected list<string> or list<int>"
    return None


REQUIRED_COLUMNS = {
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "tokens": ("tokens", "tags"),
}


def check_parquet(path: Path, *, name: str, max_rows: int) -> DatasetSummary:
    """Validate a Parquet dataset: footer and metadata first (sizes, rows, schema), then rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _parquet_footer(path, name)
    size = path.stat().st_size
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
        reason = f"unreadable Parquet metadata: {_arrow_message(exc, path, name)}"
        raise checker.fail(0, "", reason) from None
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
        total += group_bytes
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
    names = list(schema.names)
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise checker.fail(0, duplicate, "duplicate column name")
    row_format = detect_row_format(dict.fromkeys(names))
    if row_format is None:
        raise checker.fail(
            0,
            "",
            "unknown row format: expected columns 'messages', 'prompt' "
            f"and 'completion', 'text', or 'tokens' and 'tags'; found {names[:20]}",
        )
    for column in REQUIRED_COLUMNS[row_format]:
        if column not in names:
            raise checker.fail(0, column, f"missing column (the file is in {row_format} format)")
        problem = _column_type_problem(column, schema.field(column).type)
        if problem:
            raise checker.fail(0, column, problem)
    if _arrow_type_depth(schema) > MAX_DEPTH:
        raise checker.fail(0, "", f"the schema nests deeper than {MAX_DEPTH} levels")
    checker.row_format = row_format
    checker.columns = dict.fromkeys(names)
    required = list(REQUIRED_COLUMNS[row_format])
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, use_threads=False):
            # Every column is decoded (the engine reads them all); the required ones are checked.
            if batch.num_columns != len(names):
                raise checker.fail(row + 1, "", "a row group does not match the schema")
            columns = {c: batch.column(c).to_pylist() for c in required}
            for k in range(batch.num_rows):
                row += 1
                checker.count_row(row)
                record = {c: columns[c][k] for c in required}
                for field_name, reason in row_problems(record, row_format):
                    checker.error(row, field_name, reason)
    except DatasetInvalid:
        raise
    except (pa.ArrowException, OSError, ValueError, MemoryError, IndexError) as exc:
        raise checker.fail(
            row + 1, "", f"unreadable Parquet data: {_arrow_message(exc, path, name)}"
        ) from None
    if row != meta.num_rows:
        raise checker.fail(row, "", f"the file holds {row} rows but declares {meta.num_rows}")
    return checker.finish(_file_sha256(path), size, "parquet")


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
