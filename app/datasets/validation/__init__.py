"""Checks a dataset file row by row before any job may use it.

Three file formats (JSONL, Parquet, CSV; `detection` tells which) carry the four row formats of
`tov_formats` (ARCHITECTURE.md, "Dataset formats"). Every problem is reported as
{file, line|row, field, reason} so a user can fix the file: JSONL errors name the 1-based line,
Parquet errors the 1-based data row, CSV errors the data row (the header is not a row) and the
physical line.

The checks are at least as strict as the engine's reader (`tov_engine.data`, same row rules), so
a dataset the API accepts never fails later in the worker for a reason the API could have seen.
Resource limits (OWASP API4) are enforced before or while reading, never after: line length,
rows, columns, JSON nesting, sequence lengths, and for Parquet the footer and the uncompressed
sizes it declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.core.errors import InvalidInput
from app.datasets.validation.csv import check_csv
from app.datasets.validation.jsonl import check_jsonl
from app.datasets.validation.parquet import check_parquet
from app.datasets.validation.report import DatasetInvalid, DatasetSummary

if TYPE_CHECKING:
    from app.core.config import Settings


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
