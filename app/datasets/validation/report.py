"""How a dataset check reports: precise problems {file, line|row, field, reason} and a summary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_REPORTED_ERRORS = 20


class DatasetInvalid(Exception):
    """The file cannot be used; `errors` holds up to MAX_REPORTED_ERRORS precise problems."""

    def __init__(self, summary: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(summary)
        self.errors = errors


@dataclass
class DatasetSummary:
    """What a valid dataset file holds; `row_format` as the API shows it."""

    row_format: str
    rows: int
    sha256: str
    size_bytes: int
    columns: list[str] = field(default_factory=list)
    file_format: str = "jsonl"


def problem_at(name: str, unit: str, number: int, field_name: str, reason: str) -> dict[str, Any]:
    """One reported problem; `unit` is "line" (JSONL) or "row" (Parquet, CSV)."""
    return {"file": name, unit: number, "field": field_name, "reason": reason}


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
