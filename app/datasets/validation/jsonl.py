"""JSONL datasets: one strict JSON object per line, each line at most `max_line_bytes`.

Errors name the 1-based line. Blank lines are allowed only at the end, so row k is line k.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from app.datasets.validation.report import DatasetSummary
from app.datasets.validation.rows import RowChecker
from app.datasets.validation.strict_json import parse_json_line


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
    return checker.finish(path, "jsonl")
