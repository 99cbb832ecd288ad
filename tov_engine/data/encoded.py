"""Encoded sets: token ids and per-position labels of many rows, in memory or on disk.

All rows live in two flat int32 arrays plus offsets, so a large pool costs 8 bytes a token. Rows are
appended to buffers of CHUNK_TOKENS tokens; a full buffer is written to files, so a pool's size is
bounded by disk, not memory. The arrays of a set that spilled to disk (or was written to a folder)
are read-only numpy memmaps of those files. Without a folder the files go to a temporary folder
(tempfile: TMPDIR, else /tmp) that is removed as soon as the files are mapped: the mapping keeps the
data readable, and the disk space is freed once the arrays are gone. A set that fits one buffer (a
validation set, a small pool) stays in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import shutil
import tempfile
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

IGNORE = -100  # the label torch's cross-entropy skips
CHUNK_TOKENS = 1 << 20  # tokens buffered in memory before they are written out (4 MB an array)
# The files of an EncodedSet on disk: field -> (file name, dtype, array code of the write buffer).
FILES: dict[str, tuple[str, np.dtype[Any], str]] = {
    "ids": ("ids.bin", np.dtype("<i4"), "i"),
    "labels": ("labels.bin", np.dtype("<i4"), "i"),
    "offsets": ("offsets.bin", np.dtype("<i8"), "q"),
    "truncated": ("truncated.bin", np.dtype("|b1"), "b"),
}
META = "encoded.json"  # {"rows": ..., "tokens": ...}


@dataclass(frozen=True)
class EncodedSet:
    """Tokenised rows: row i spans ids[offsets[i]:offsets[i+1]] and labels likewise.

    The arrays are in memory or read-only memmaps of files (see the module docstring); callers read
    them the same way. Per-row lengths are computed once, in chunks, and kept.
    """

    ids: np.ndarray  # (total_tokens,) int32
    labels: np.ndarray  # (total_tokens,) int32, IGNORE where a position carries no loss
    offsets: np.ndarray  # (rows + 1,) int64
    truncated: np.ndarray  # (rows,) bool, True where max_length cut the row

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and labels of row i."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.ids[a:b], self.labels[a:b]

    @property
    def on_disk(self) -> bool:
        """True when the token arrays are memmaps of files."""
        return isinstance(self.ids, np.memmap)

    @cached_property
    def seq_lengths(self) -> np.ndarray:
        """(rows,) int64 tokens per row, loss-bearing or not (what a batch must pad to).

        Computed once and shared: the array is read-only."""
        lengths = np.diff(np.asarray(self.offsets))
        lengths.flags.writeable = False
        return lengths

    @cached_property
    def _loss_lengths(self) -> np.ndarray:
        out = np.zeros(len(self), dtype=np.int32)
        offsets, rows, r = self.offsets, len(self), 0
        while r < rows:  # rows r..s-1, about CHUNK_TOKENS tokens (at least one row) at a time
            a = int(offsets[r])
            s = int(np.searchsorted(offsets, a + CHUNK_TOKENS, side="right")) - 1
            s = min(rows, max(s, r + 1))
            b = int(offsets[s])
            bearing = np.zeros(b - a + 1, dtype=np.int64)
            np.cumsum(np.asarray(self.labels[a:b]) != IGNORE, out=bearing[1:])
            ends = np.asarray(offsets[r : s + 1]) - a
            out[r:s] = bearing[ends[1:]] - bearing[ends[:-1]]
            release_pages(self.labels)
            r = s
        return out

    @property
    def loss_lengths(self) -> np.ndarray:
        """(rows,) int32 loss-bearing tokens per row (a fresh copy: callers may keep it)."""
        return self._loss_lengths.copy()


def array_sha256(a: np.ndarray) -> bytes:
    """sha256 digest of an array's bytes, read in chunks: the same digest as
    `hashlib.sha256(a.tobytes()).digest()` without a copy of the whole array in memory."""
    h = hashlib.sha256()
    flat = a.reshape(-1)
    step = max(1, CHUNK_TOKENS * 4 // max(1, a.itemsize))
    for start in range(0, len(flat), step):
        h.update(np.ascontiguousarray(flat[start : start + step]).data)
        release_pages(a)
    return h.digest()


def release_pages(a: np.ndarray) -> None:
    """Unmap the resident pages of a memmap from this process after a sequential scan.

    Pages of a file read through a mapping count in the process's RSS until unmapped, although
    the kernel may reclaim them (the data stays in the page cache and faults back in on the next
    read). Scans over a whole pool call this after every chunk, so a scan does not raise the
    process's peak RSS by the pool's size. A no-op for in-memory arrays."""
    handle = getattr(a, "_mmap", None)  # np.memmap keeps its mmap.mmap here (views share it)
    if handle is None or getattr(a, "mode", "c") == "c" or not hasattr(mmap, "MADV_DONTNEED"):
        return  # (a copy-on-write mapping would lose its private changes)
    with contextlib.suppress(OSError, ValueError):  # a closed mapping: harmless
        handle.madvise(mmap.MADV_DONTNEED)


class _Column:
    """One array appended in chunks: kept in a buffer, then written to a file once `spill` is
    called."""

    def __init__(self, field: str) -> None:
        self.name, self.dtype, code = FILES[field]
        self.buffer = array(code)
        self.handle: BinaryIO | None = None
        self.path: Path | None = None
        self.count = 0

    def spill(self, folder: Path) -> None:
        self.path = folder / self.name
        self.handle = open(self.path, "wb")  # noqa: SIM115 (closed in finish/close)
        self.flush()

    def flush(self) -> None:
        if self.handle is not None and len(self.buffer):
            np.frombuffer(self.buffer, dtype=self.dtype).tofile(self.handle)
            self.count += len(self.buffer)
            del self.buffer[:]

    def finish(self) -> np.ndarray:
        if self.handle is None:
            out = np.frombuffer(self.buffer, dtype=self.dtype).copy()
            del self.buffer[:]
            return out
        self.flush()
        self.close()
        assert self.path is not None
        return map_file(self.path, self.dtype, self.count)

    def close(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()


def map_file(path: Path, dtype: np.dtype[Any], count: int) -> np.ndarray:
    """A read-only memmap of `count` values of a raw file (an empty array for count 0)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class EncodedWriter:
    """Builds an EncodedSet row by row with bounded memory.

    Args:
        folder: where the files go (kept: the caller owns the folder). None = in memory while the
            set fits one chunk, then a temporary folder removed once the files are mapped.
        chunk_tokens: tokens buffered before a write (default CHUNK_TOKENS).
    """

    def __init__(self, folder: Path | None = None, chunk_tokens: int | None = None) -> None:
        self.folder = folder
        self.temporary = False
        self.chunk = chunk_tokens or CHUNK_TOKENS
        self.columns = {field: _Column(field) for field in FILES}
        self.columns["offsets"].buffer.append(0)
        self.tokens = 0
        if folder is not None:
            self._spill(folder)

    def _spill(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for column in self.columns.values():
            column.spill(folder)

    def add(self, ids: Any, labels: Any, truncated: bool) -> None:
        """Append one row (sequences of ints of equal length)."""
        cols = self.columns
        cols["ids"].buffer.extend(ids)
        cols["labels"].buffer.extend(labels)
        if len(cols["ids"].buffer) != len(cols["labels"].buffer):
            raise ValueError("a row's ids and labels differ in length")
        self.tokens += len(ids)
        cols["offsets"].buffer.append(self.tokens)
        cols["truncated"].buffer.append(1 if truncated else 0)
        if len(cols["ids"].buffer) >= self.chunk or len(cols["offsets"].buffer) >= self.chunk:
            if self.folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix="tov-encoded-"))
                self.temporary = True
                logger.info(
                    "tokenised rows exceed %d tokens: writing them to %s", self.chunk, self.folder
                )
                self._spill(self.folder)
            for column in cols.values():
                column.flush()

    def finish(self) -> EncodedSet:
        """The EncodedSet of the rows added (files are flushed and mapped)."""
        try:
            arrays = {field: column.finish() for field, column in self.columns.items()}
            if self.folder is not None and not self.temporary:
                meta = {"rows": len(arrays["truncated"]), "tokens": len(arrays["ids"])}
                (self.folder / META).write_text(json.dumps(meta))
        finally:
            self.close()
        return EncodedSet(**arrays)

    def close(self) -> None:
        """Close the files; a temporary folder is removed (mapped files stay readable)."""
        for column in self.columns.values():
            column.close()
        if self.temporary and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.temporary = False


def write_encoded(encoded: EncodedSet, folder: Path, chunk_tokens: int | None = None) -> None:
    """Write an EncodedSet's arrays to `folder` (the layout `open_encoded` reads), in chunks."""
    folder.mkdir(parents=True, exist_ok=True)
    step = chunk_tokens or CHUNK_TOKENS
    for field, (name, dtype, _) in FILES.items():
        values = getattr(encoded, field)
        with open(folder / name, "wb") as handle:
            for start in range(0, len(values), step):
                np.asarray(values[start : start + step], dtype=dtype).tofile(handle)
                release_pages(values)
    meta = {"rows": len(encoded), "tokens": len(encoded.ids)}
    (folder / META).write_text(json.dumps(meta))


def open_encoded(folder: Path) -> EncodedSet:
    """The EncodedSet whose files are in `folder`, as read-only memmaps."""
    meta = json.loads((folder / META).read_text())
    counts = {
        "ids": meta["tokens"],
        "labels": meta["tokens"],
        "offsets": meta["rows"] + 1,
        "truncated": meta["rows"],
    }
    arrays = {}
    for field, (name, dtype, _) in FILES.items():
        path = folder / name
        if path.stat().st_size != counts[field] * dtype.itemsize:
            raise ValueError(
                f"{path}: {path.stat().st_size} bytes, expected {counts[field]} values"
            )
        arrays[field] = map_file(path, dtype, counts[field])
    return EncodedSet(**arrays)


def map_labels(
    encoded: EncodedSet,
    fn: Callable[[np.ndarray], np.ndarray],
    chunk_tokens: int | None = None,
) -> EncodedSet:
    """`encoded` with labels replaced by fn(labels), applied chunk by chunk; ids, offsets and
    truncation flags are shared. A set on disk gets its new labels on disk too (a temporary file,
    removed once mapped)."""
    labels = encoded.labels
    if not encoded.on_disk:
        out = np.asarray(fn(np.asarray(labels)), dtype=np.int32)
        return EncodedSet(encoded.ids, out, encoded.offsets, encoded.truncated)
    step = chunk_tokens or CHUNK_TOKENS
    name, dtype, _ = FILES["labels"]
    folder = Path(tempfile.mkdtemp(prefix="tov-encoded-"))
    try:
        with open(folder / name, "wb") as handle:
            for start in range(0, len(labels), step):
                part = fn(np.asarray(labels[start : start + step]))
                np.asarray(part, dtype=dtype).tofile(handle)
                release_pages(labels)
        mapped = map_file(folder / name, dtype, len(labels))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return EncodedSet(encoded.ids, mapped, encoded.offsets, encoded.truncated)
