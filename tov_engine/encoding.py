"""Tokenising rows into compact arrays with loss masks, streamed to disk.

Every row becomes token ids and, per position, a label: the token itself where the position carries
loss (causal LM: assistant turns, the completion, or all text), a tag id (token classification), or
IGNORE. All rows live in two flat int32 arrays plus offsets, so a large pool costs 8 bytes a token.

Rows are tokenised one at a time and appended to buffers of CHUNK_TOKENS tokens; a full buffer
is written to files, so the pool's size is bounded by disk, not memory. The arrays of a set that
spilled to disk (or was written to a folder) are read-only numpy memmaps of those files. Without a
folder the files go to a temporary folder (tempfile: TMPDIR, else /tmp) that is removed as soon as
the files are mapped: the mapping keeps the data readable, and the disk space is freed once the
arrays are gone. A set that fits one buffer (a validation set, a small pool) stays in memory.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tov_engine.data import detect_format
from tov_engine.errors import DataError, ModelError

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


def _append_eos(tokenizer: Any, ids: list[int]) -> list[int]:
    eos = tokenizer.eos_token_id
    return [*ids, eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def _encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """Render with the chat template; mark tokens inside each assistant turn as loss-bearing.

    Each assistant span runs from the end of the rendered prefix (with the generation prompt) to the
    end of the rendered conversation up to that turn, so it includes the end-of-turn token.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the tokenizer has no chat template; chat-format data needs one")
    render = tokenizer.apply_chat_template
    full = render(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = render(messages[:k], tokenize=False, add_generation_prompt=True) if k else ""
        upto = render(messages[: k + 1], tokenize=False)
        if not (full.startswith(upto) and upto.startswith(start)):
            raise ModelError("the chat template does not render conversations prefix by prefix")
        spans.append((len(start), len(upto)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(a <= s < b for a, b in spans) for s, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def encode_causal(tokenizer: Any, record: dict[str, Any]) -> tuple[list[int], list[bool]]:
    """Token ids and a loss mask for one causal-LM row (untruncated).

    Args:
        tokenizer: a fast tokenizer. record: a validated row.
    Returns:
        (ids, mask) with mask[i] True where token i is a prediction target.
    """
    fmt = detect_format(record)
    if fmt == "chat":
        ids, mask = _encode_chat(tokenizer, record["messages"])
    elif fmt == "prompt_completion":
        prompt = list(tokenizer(record["prompt"])["input_ids"]) if record["prompt"] else []
        answer = _append_eos(
            tokenizer, list(tokenizer(record["completion"], add_special_tokens=False)["input_ids"])
        )
        ids, mask = prompt + answer, [False] * len(prompt) + [True] * len(answer)
    elif fmt == "text":
        ids = _append_eos(tokenizer, list(tokenizer(record["text"])["input_ids"]))
        mask = [True] * len(ids)
    else:
        raise ModelError(f"a causal LM cannot train on {fmt} rows; use task token_classification")
    if mask:
        mask[0] = False  # nothing predicts the first token
    return ids, mask


def encode_tagged(
    tokenizer: Any, record: dict[str, Any], label_ids: dict[Any, int], max_length: int
) -> tuple[list[int], list[int], bool]:
    """Token ids, per-token labels (first sub-word of each word) and a truncation flag.

    Args:
        tokenizer: a fast tokenizer. record: a tokens+tags row. label_ids: tag -> class id.
        max_length: tokens per row, special tokens included.
    Returns:
        (ids, labels, truncated).
    """
    try:
        enc = tokenizer(
            record["tokens"], is_split_into_words=True, truncation=True, max_length=max_length
        )
        word_ids = enc.word_ids()
    except Exception as exc:  # tokenizers differ in what they reject; name the cause
        raise ModelError(f"the tokenizer cannot encode pre-split words: {exc}") from exc
    labels, seen = [], set()
    for w in word_ids:
        first = w is not None and w not in seen
        labels.append(label_ids[record["tags"][w]] if first else IGNORE)
        if w is not None:
            seen.add(w)
    return list(enc["input_ids"]), labels, len(seen) < len(record["tokens"])


def label_set(rows: Iterable[dict[str, Any]], file: str) -> list[Any]:
    """Sorted distinct tags of token-classification rows (all strings or all ints)."""
    tags: set[Any] = set()
    for record in rows:
        tags.update(record.get("tags", ()))
    if len({type(t) for t in tags}) > 1:
        raise DataError(file, 0, "tags", "tags mix strings and integers across the files")
    return sorted(tags)


def encode_rows(
    tokenizer: Any,
    rows: Iterable[dict[str, Any]],
    *,
    max_length: int,
    label_ids: dict[Any, int] | None = None,
    folder: Path | None = None,
    chunk_tokens: int | None = None,
) -> EncodedSet:
    """Tokenise rows into an EncodedSet, cutting each to max_length tokens.

    Rows are consumed one at a time (pass a stream such as read_rows) and written out in chunks, so
    memory stays bounded whatever the number of rows.

    Args:
        tokenizer: a fast tokenizer. rows: validated rows (e.g. from read_rows).
        max_length: tokens per row. label_ids: tag -> class id for token classification, else None.
        folder: where the arrays' files go (the caller owns it; `open_encoded` reopens it). None =
            in memory up to one chunk, then a temporary folder (see the module docstring).
        chunk_tokens: tokens buffered before a write (default CHUNK_TOKENS).
    Returns:
        The EncodedSet in row order.
    """
    writer = EncodedWriter(folder, chunk_tokens)
    try:
        for record in rows:
            if label_ids is not None:
                ids, labels, cut = encode_tagged(tokenizer, record, label_ids, max_length)
            else:
                ids, mask = encode_causal(tokenizer, record)
                cut = len(ids) > max_length
                ids, mask = ids[:max_length], mask[:max_length]
                labels = [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]
            writer.add(ids, labels, cut)
        return writer.finish()
    finally:
        writer.close()


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
