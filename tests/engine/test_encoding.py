"""Tokenising with loss masks: assistant turns, completions, all text, truncation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tov_engine import ModelError
from tov_engine.encoding import IGNORE, encode_rows
from tov_engine.modeling import load_tokenizer


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
    assert enc.loss_lengths[1] == 0 and enc.loss_lengths[0] > 0  # the prompt filled the window
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
