"""Rows longer than max_length keep their response (the prompt is cut from the left); rows left
without a loss-bearing token are counted and listed in the job's stats and the CLI summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.engine.conftest import WriteRows
from tov_engine import JobConfig, SelectionConfig
from tov_engine.cli import _summary
from tov_engine.data.encoded import IGNORE
from tov_engine.data.encoding import encode_rows, fit_causal
from tov_engine.job import SelectionOutcome, prepare_job
from tov_engine.model.loading import load_tokenizer
from tov_engine.selection import Selection


def test_the_prompt_is_cut_from_the_left() -> None:
    ids = list(range(10))
    mask = [False] * 6 + [True] * 4  # a 6-token prompt, a 4-token answer
    kept, kept_mask = fit_causal(ids, mask, 7)
    assert kept == [3, 4, 5, 6, 7, 8, 9]  # the answer whole, one prompt token before it
    assert kept_mask == [False] * 3 + [True] * 4
    assert fit_causal(ids, mask, 10) == (ids, mask)  # a row that fits is untouched


def test_an_answer_longer_than_the_window_keeps_its_start() -> None:
    ids = list(range(10))
    mask = [False] * 3 + [True] * 7
    kept, kept_mask = fit_causal(ids, mask, 4)
    assert kept == [2, 3, 4, 5] and kept_mask == [False, True, True, True]


def test_a_long_prompt_no_longer_costs_the_answer(tiny_causal_lm_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_causal_lm_dir)
    rows = [{"prompt": "The quick brown fox jumps over the lazy dog." * 3, "completion": "ok"}]
    full = encode_rows(tokenizer, rows, max_length=512)
    cut = encode_rows(tokenizer, rows, max_length=8)
    assert cut.truncated.tolist() == [True] and cut.seq_lengths.tolist() == [8]
    assert cut.loss_lengths[0] == full.loss_lengths[0] > 0  # the whole answer is scored
    ids, labels = cut.row(0)
    full_ids = full.row(0)[0]
    assert ids.tolist() == full_ids[-8:].tolist()  # the end of the row, prompt cut on the left
    assert labels[0] == IGNORE


def test_rows_that_cannot_fit_are_listed(
    write_jsonl: WriteRows, tiny_token_classifier_dir: Path
) -> None:
    rows = [
        {"tokens": ["Alice", "works", "at", "Google"], "tags": ["B-PER", "O", "O", "B-ORG"]},
        {"tokens": ["Bob", "runs"], "tags": ["B-PER", "O"]},
    ]
    pool = write_jsonl("pool.jsonl", rows)
    config = JobConfig(
        task="token_classification", max_length=2, selection=SelectionConfig(budget=1)
    )
    job = prepare_job(
        pool_path=pool, validation_path=pool, model=tiny_token_classifier_dir, config=config
    )
    # [CLS] and [SEP] fill a 2-token window: no word, so no tag, is left to score.
    assert job.stats["rows_without_loss_tokens"] == 2
    assert job.stats["unfit_rows"] == [
        {"index": 0, "reason": "no loss-bearing token left within max_length=2"},
        {"index": 1, "reason": "no loss-bearing token left within max_length=2"},
    ]
    outcome = SelectionOutcome(
        scores=np.full(2, np.nan, dtype=np.float32),
        lengths=job.pool.loss_lengths,
        base_indices=np.zeros(0, dtype=np.int64),
        selection=Selection(indices=np.zeros(0, dtype=np.int64), scores=np.zeros(0), sources=[]),
        stats=job.stats,
    )
    summary = _summary(outcome)
    assert "rows_without_loss_tokens=2" in summary
    assert "row 0: no loss-bearing token left within max_length=2" in summary
