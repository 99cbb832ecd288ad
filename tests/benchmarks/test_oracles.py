"""The quality benchmark's oracles: `oracle` spends the whole budget on target-like rows,
`oracle_half` only score+random's score half (its ceiling); the rest is drawn at random."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.quality.plan import oracle_picks

MASK = [i % 10 == 0 for i in range(200)]  # 20 target-like rows of 200
META = {"target_mask": MASK}


@pytest.mark.parametrize(
    ("method", "budget", "known"), [("oracle", 20, 20), ("oracle_half", 21, 11)]
)
def test_oracles_spend_their_known_slots_on_target_rows(
    method: str, budget: int, known: int
) -> None:
    for seed in range(5):
        picks = oracle_picks(method, META, budget, seed)
        assert len(picks) == len(set(picks)) == budget
        assert picks == sorted(picks)
        # the known slots are target rows; the random rest may hold a few more by chance
        assert np.asarray(MASK)[picks].sum() >= min(known, sum(MASK))
        assert picks == oracle_picks(method, META, budget, seed)  # deterministic


def test_oracle_half_draws_the_rest_uniformly_from_the_whole_pool() -> None:
    mask = np.asarray(MASK)
    extra = [mask[oracle_picks("oracle_half", META, 20, seed)].sum() - 10 for seed in range(300)]
    # 10 random draws from 190 rows holding 10 target rows: 0.53 expected per selection
    assert 0.3 < float(np.mean(extra)) < 0.8


def test_oracle_fills_with_other_rows_when_the_pool_has_too_few_targets() -> None:
    picks = oracle_picks("oracle", META, 30, 0)
    assert len(set(picks)) == 30 and np.asarray(MASK)[picks].sum() == 20
