"""Tokenising rows with loss masks: chat, prompt/completion, text and tagged tokens.

Every row becomes token ids and, per position, a label: the token itself where the position carries
loss (causal LM: assistant turns, the completion, or all text), a tag id (token classification), or
IGNORE. The rows are streamed into an EncodedSet (encoded.py), in memory or on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tov_engine.data.encoded import IGNORE, EncodedSet, EncodedWriter
from tov_engine.data.rows import detect_format
from tov_engine.errors import DataError, ModelError

logger = logging.getLogger(__name__)


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


def fit_causal(ids: list[int], mask: list[bool], max_length: int) -> tuple[list[int], list[bool]]:
    """Cut a row longer than max_length so that its response survives.

    The prompt goes first, from the left (keeping one token before the first loss-bearing one,
    which predicts it); only if the response alone is still too long is its end cut. A row that
    fits is returned as it is.
    """
    if len(ids) <= max_length:
        return ids, mask
    first = next((i for i, m in enumerate(mask) if m), len(ids))
    drop = min(len(ids) - max_length, max(first - 1, 0))
    return ids[drop:][:max_length], mask[drop:][:max_length]


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
    """Tokenise rows into an EncodedSet, cutting each to max_length tokens (fit_causal: the
    prompt is cut from the left first, so the response is kept).

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
                ids, mask = fit_causal(ids, mask, max_length)
                labels = [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]
            writer.add(ids, labels, cut)
        return writer.finish()
    finally:
        writer.close()
