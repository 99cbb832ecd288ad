"""Token-classification score reduction: class-balanced weights and per-row weighted sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tov_engine.data.batching import make_batch
from tov_engine.data.encoded import IGNORE, EncodedSet
from tov_engine.model import scoring
from tov_engine.model.logprob import TokenLogprobs, row_weighted_sums, token_logprobs
from tov_engine.model.scoring import TokenStore, label_weights, stored_combine, storing_combine

N_LABELS = 3  # 0 = the majority tag ("O"), 1 and 2 rare entity tags


def _encoded(rows: list[list[int]]) -> EncodedSet:
    """Rows of labels (IGNORE for a non-loss position); token id = position in the row + 1."""
    labels = np.concatenate([np.asarray(r, dtype=np.int32) for r in rows])
    ids = np.concatenate([np.arange(1, len(r) + 1, dtype=np.int32) for r in rows])
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return EncodedSet(
        ids=ids, labels=labels, offsets=offsets, truncated=np.zeros(len(rows), dtype=bool)
    )


class _Tagger(nn.Module):
    """Logits from the token id alone: row-independent, and `shift` makes the gold of chosen
    labels more likely (a stand-in for the validation fine-tune)."""

    def __init__(self, shift: dict[int, float]) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.shift = torch.zeros(N_LABELS)
        for label, value in shift.items():
            self.shift[label] = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
        logits = torch.zeros(*input_ids.shape, N_LABELS) + self.shift + 0 * self.dummy

        class Out:
            pass

        out = Out()
        out.logits = logits  # type: ignore[attr-defined]
        return out


def test_label_weights_are_inverse_frequency_normalised() -> None:
    enc = _encoded([[0, 0, 0, IGNORE], [0, 1], [IGNORE]])  # label 0: 4, label 1: 1, label 2: 0
    w = label_weights(enc)
    # M = 5 loss positions, K = 2 labels present: w_c = 5 / (2 * N_c); absent labels weigh 0.
    assert w.tolist() == pytest.approx([5 / 8, 5 / 2])
    balanced = label_weights(_encoded([[0, 1], [1, 0]]))
    assert balanced.tolist() == pytest.approx([1.0, 1.0])


def test_label_weights_count_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [[0, 0, 2, IGNORE, 0], [1, 0, 0], [2, 2, 0, 0, 0, 0]]
    whole = label_weights(_encoded(rows))
    monkeypatch.setattr(scoring, "LABEL_CHUNK", 2)
    assert label_weights(_encoded(rows)).tolist() == pytest.approx(whole.tolist())


def test_row_weighted_sums_nan_for_rows_without_positions() -> None:
    lp = TokenLogprobs(values=torch.tensor([1.0, 2.0, 3.0]), row=torch.tensor([0, 0, 2]), rows=3)
    out = row_weighted_sums(lp.values, lp, torch.tensor([1.0, 0.5, 2.0]))
    assert out[0].item() == pytest.approx(2.0) and np.isnan(out[1].item())
    assert out[2].item() == pytest.approx(6.0)


def _scores(enc: EncodedSet, after: _Tagger, reduction: str | None) -> np.ndarray:
    before = _Tagger({})
    batches = [np.arange(len(enc))]
    store = TokenStore(enc, batches)
    scoring.run_pass(
        before, enc, batches, storing_combine(before, "token_classification", store), pad_id=0
    )
    combine = stored_combine(after, "token_classification", store, "improvement", reduction)
    return scoring.run_pass(after, enc, batches, combine, pad_id=0)


def test_class_balanced_sum_ranks_the_row_with_the_rare_label_first() -> None:
    # The validation fine-tune made the majority tag 0 more likely (a prior shift: it is most of
    # every row) and label 1 (the target's entity tag) a little less so; label 2 less likely.
    # Row 0 has one label-1 token among 0s, row 1 only 0s, row 2 a label-2 token.
    enc = _encoded([[0] * 9 + [1], [0] * 4, [0, 0, 2], [0] * 20 + [1, 2]])
    after = _Tagger({0: 1.0, 1: 0.9})
    mean = _scores(enc, after, "mean")
    balanced = _scores(enc, after, "class_balanced")
    # The mean ranks the all-majority row 1 first: the rare token is diluted in row 0.
    assert int(np.argmax(mean)) == 1
    # Class-balanced: sum_t Delta_t * M / (K N_c); row 0 first, row 2 (label 2 only) last.
    assert int(np.argmax(balanced)) == 0 and int(np.argmin(balanced)) == 2
    # By hand: Delta for each label under the shifted logits, weights from the pool's counts.
    lse = np.log(np.exp([1.0, 0.9, 0.0]).sum())
    delta = np.array([1.0, 0.9, 0.0]) - lse + np.log(3.0)
    assert delta[0] > delta[1] > 0 > delta[2]
    counts = np.array([9 + 4 + 2 + 20, 2, 2])
    w = counts.sum() / (3 * counts)
    assert balanced[0] == pytest.approx(9 * w[0] * delta[0] + w[1] * delta[1], rel=1e-5)
    # The default (reduction None) is the class-balanced sum.
    assert np.allclose(_scores(enc, after, None), balanced)


def test_reduction_is_validated() -> None:
    enc = _encoded([[0, 1]])
    store = TokenStore(enc, [np.arange(1)])
    with pytest.raises(ValueError, match="reduction"):
        stored_combine(_Tagger({}), "token_classification", store, "improvement", "median")


def test_batch_label_order_matches_token_logprobs() -> None:
    # The weights are looked up from batch.labels in the order token_logprobs returns positions.
    enc = _encoded([[0, IGNORE, 1], [2, 0]])
    batch = make_batch(enc, np.array([0, 1]), 0, torch.device("cpu"))
    lp = token_logprobs(_Tagger({}), batch, "token_classification")
    gold = batch.labels[batch.labels != IGNORE]
    assert gold.tolist() == [0, 1, 2, 0] and lp.row.tolist() == [0, 0, 1, 1]
