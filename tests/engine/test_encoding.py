"""Tokenising with loss masks: assistant turns, completions, all text, truncation."""

from __future__ import annotations

import hashlib
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tov_engine import DataError, ModelError
from tov_engine.data import encoded as encoding
from tov_engine.data.encoded import (
    IGNORE,
    EncodedSet,
    array_sha256,
    map_labels,
    open_encoded,
    write_encoded,
)
from tov_engine.data.encoding import encode_rows
from tov_engine.model.loading import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_causal_lm_dir: Path) -> object:
    return load_tokenizer(tiny_causal_lm_dir)


def _loss_text(tokenizer: object, row: dict, max_length: int = 512) -> str:
    enc = encode_rows(tokenizer, [row], max_length=max_length)
    ids, labels = enc.row(0)
    return tokenizer.decode(ids[labels != IGNORE].tolist())  # type: ignore[attr-defined]


def test_chat_loss_on_assistant_turns_only(tokenizer: object) -> None:
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And Germany?"},
            {"role": "assistant", "content": "Berlin."},
        ]
    }
    text = _loss_text(tokenizer, row)
    assert "Paris." in text and "Berlin." in text and text.count("<|im_end|>") == 2
    assert "France" not in text and "Germany" not in text and "brief" not in text


def test_prompt_is_masked_and_completion_ends_with_eos(tokenizer: object) -> None:
    text = _loss_text(tokenizer, {"prompt": "Two plus two is", "completion": " four."})
    assert text == " four.<|im_end|>"


def test_text_loss_on_all_but_first_token(tokenizer: object) -> None:
    enc = encode_rows(tokenizer, [{"text": "The cat sat on the mat."}], max_length=512)
    assert enc.loss_lengths[0] == enc.seq_lengths[0] - 1


def test_truncation_is_counted_and_lengths_follow(tokenizer: object) -> None:
    rows = [
        {"prompt": "Hi", "completion": "The quick brown fox jumps over the lazy dog."},
        {"prompt": "The quick brown fox jumps over the lazy dog." * 3, "completion": "ok"},
    ]
    enc = encode_rows(tokenizer, rows, max_length=8)
    assert enc.truncated.tolist() == [True, True]
    assert enc.seq_lengths.tolist() == [8, 8]
    # issue 14: the long prompt is cut from the left, so the answer survives (it used to be cut)
    assert enc.loss_lengths[1] > 0 and enc.loss_lengths[0] > 0
    assert enc.ids.dtype == np.int32 and enc.labels.dtype == np.int32


def test_chat_needs_a_template(tokenizer: object) -> None:
    template = tokenizer.chat_template  # type: ignore[attr-defined]
    tokenizer.chat_template = None  # type: ignore[attr-defined]
    try:
        with pytest.raises(ModelError, match="chat template"):
            encode_rows(
                tokenizer, [{"messages": [{"role": "assistant", "content": "x"}]}], max_length=32
            )
    finally:
        tokenizer.chat_template = template  # type: ignore[attr-defined]


# ---- streaming to disk ---------------------------------------------------------------------

MIXED = [
    {"prompt": "Hi", "completion": "The quick brown fox jumps over the lazy dog."},
    {"prompt": "The quick brown fox jumps over the lazy dog." * 3, "completion": "ok"},
    {"text": "The cat sat on the mat."},
    {"prompt": "", "completion": "Bonjour."},
]


def _rows(n: int) -> Iterator[dict[str, str]]:
    for i in range(n):
        yield dict(MIXED[i % len(MIXED)])


def _same_set(a: EncodedSet, b: EncodedSet) -> None:
    for name in ("ids", "labels", "offsets", "truncated"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert np.array_equal(a.seq_lengths, b.seq_lengths)
    assert np.array_equal(a.loss_lengths, b.loss_lengths)


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_a_large_set_spills_to_disk_with_identical_arrays(
    tokenizer: object, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = encode_rows(tokenizer, _rows(41), max_length=12)
    assert not memory.on_disk
    disk = encode_rows(tokenizer, _rows(41), max_length=12, chunk_tokens=16)
    assert disk.on_disk and isinstance(disk.ids, np.memmap) and not disk.ids.flags.writeable
    _same_set(memory, disk)
    assert list(temp_root.iterdir()) == []  # the temporary folder is gone, the mapping stays
    # Per-row loss lengths are computed in chunks: every chunk size gives the same counts.
    expected = [int((disk.row(i)[1] != IGNORE).sum()) for i in range(len(disk))]
    for chunk in (1, 5, 64):
        monkeypatch.setattr(encoding, "CHUNK_TOKENS", chunk)
        again = encode_rows(tokenizer, _rows(41), max_length=12, chunk_tokens=16)
        assert again.loss_lengths.tolist() == expected


def test_a_set_written_to_a_folder_reopens_as_memmaps(tokenizer: object, tmp_path: Path) -> None:
    memory = encode_rows(tokenizer, _rows(9), max_length=12)
    written = encode_rows(tokenizer, _rows(9), max_length=12, folder=tmp_path / "enc")
    assert written.on_disk
    _same_set(memory, written)
    _same_set(memory, open_encoded(tmp_path / "enc"))
    write_encoded(memory, tmp_path / "copy", chunk_tokens=7)
    _same_set(memory, open_encoded(tmp_path / "copy"))
    empty = encode_rows(tokenizer, [], max_length=12, folder=tmp_path / "empty")
    assert len(empty) == 0 and len(open_encoded(tmp_path / "empty")) == 0


def test_a_failed_encoding_leaves_no_temporary_files(tokenizer: object, temp_root: Path) -> None:
    def rows() -> Iterator[dict[str, str]]:
        yield from _rows(20)
        raise DataError("pool.jsonl", 21, "text", "empty text")

    with pytest.raises(DataError):
        encode_rows(tokenizer, rows(), max_length=12, chunk_tokens=16)
    assert list(temp_root.iterdir()) == []


def test_labels_are_remapped_chunk_by_chunk(tokenizer: object, temp_root: Path) -> None:
    memory = encode_rows(tokenizer, _rows(17), max_length=12)
    disk = encode_rows(tokenizer, _rows(17), max_length=12, chunk_tokens=16)

    def shift(part: np.ndarray) -> np.ndarray:
        return np.where(part == IGNORE, IGNORE, part + 1)

    a, b = map_labels(memory, shift), map_labels(disk, shift, chunk_tokens=5)
    assert b.on_disk and b.ids is disk.ids
    _same_set(a, b)
    assert list(temp_root.iterdir()) == []


def test_array_digest_streams_and_matches_tobytes(tokenizer: object, temp_root: Path) -> None:
    disk = encode_rows(tokenizer, _rows(30), max_length=12, chunk_tokens=16)
    for a in (disk.ids, disk.labels, disk.offsets, disk.truncated, np.zeros(0, np.int32)):
        assert array_sha256(a) == hashlib.sha256(a.tobytes()).digest()


def test_encoding_memory_does_not_grow_with_the_rows(
    tokenizer: object, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peak Python-heap memory (tracemalloc: numpy buffers, lists, arrays) while tokenising a
    streamed pool: flat from N to 8N rows once the set spills (the token arrays are on disk; the
    per-row arrays, a few bytes a row, are the only part that grows)."""
    monkeypatch.setattr(encoding, "CHUNK_TOKENS", 256)  # the chunk of the loss-length count

    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            enc = encode_rows(tokenizer, _rows(n), max_length=12)
            enc.loss_lengths  # noqa: B018  (chunked too)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(300), peak(2400)
    assert large < 1.5 * small + 64 * 1024, (small, large)
