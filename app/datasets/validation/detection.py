"""Which file format an upload is: from its Content-Type, its name and its first bytes.

Compressed bodies (gzip, zstd, ...) are refused outright (415): no decompression bomb can reach a
parser. Parquet's own page compression is bounded by the checks in `parquet_metadata`.
"""

from __future__ import annotations

from pathlib import Path

from app.core.errors import InvalidInput, UnsupportedMediaType
from app.datasets.validation.parquet_metadata import PARQUET_MAGIC
from app.datasets.validation.report import problem_at

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
    """The file format a file name's suffix names, or None."""
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
            errors=[problem_at(name, "row", 0, "", "not a Parquet file: missing PAR1 magic")],
        )
    if chosen != "parquet" and is_parquet:
        raise InvalidInput(
            f"{name}: the body is a Parquet file but was sent as {chosen}; send it with "
            "Content-Type application/vnd.apache.parquet.",
            errors=[problem_at(name, "line", 1, "", f"Parquet bytes in a {chosen} upload")],
        )
    return chosen
