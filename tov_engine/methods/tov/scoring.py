"""ToV's scoring of R with a round's pair (theta_bas_k, theta_val_k): two passes over R.

The base pass keeps the log-probability of every loss token of R under theta_bas_k (a TokenStore);
the validation pass scores each row from its tokens' log-probabilities under theta_val_k against the
kept ones (score_fn, token_score). Progress: with LoRA a row counts once per round, half in each
pass; with full fine-tuning once per pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tov_engine.config import ToVConfig
from tov_engine.data.encoded import EncodedSet
from tov_engine.model.scoring import (
    RowLosses,
    TokenStore,
    run_pass,
    stored_combine,
    storing_combine,
)
from tov_engine.model.surrogate import Surrogate
from tov_engine.progress import Tracker

Units = Callable[[int], int] | None


def first_half(n: int) -> int:
    """A LoRA row's share of progress in the base pass."""
    return (n + 1) // 2


def second_half(n: int) -> int:
    """A LoRA row's share of progress in the validation pass."""
    return n // 2


def pass_units(surrogate: Surrogate) -> tuple[Units, Units]:
    """Progress units of a batch in the (base, validation) passes: None counts every row."""
    return (first_half, second_half) if surrogate.lora else (None, None)


def base_units(surrogate: Surrogate, batches: list[np.ndarray]) -> int:
    """The progress units of one base pass over `batches` (for a pass that is skipped)."""
    units = pass_units(surrogate)[0]
    return sum(units(len(b)) if units else len(b) for b in batches)


def base_pass(
    surrogate: Surrogate,
    pool: EncodedSet,
    batches: list[np.ndarray],
    *,
    task: str,
    pad_id: int,
    tracker: Tracker,
    logprobs: np.ndarray | None = None,
) -> TokenStore:
    """The log-probs of R's loss tokens under theta_bas (into `logprobs` when given)."""
    kept = TokenStore(pool, batches, logprobs)
    with surrogate.scoring("base"):
        keep = storing_combine(surrogate.model, task, kept)
        units = pass_units(surrogate)[0]
        run_pass(surrogate.model, pool, batches, keep, pad_id=pad_id, tracker=tracker, units=units)
    return kept


def val_pass(
    surrogate: Surrogate,
    pool: EncodedSet,
    batches: list[np.ndarray],
    base_logprobs: TokenStore,
    *,
    config: ToVConfig,
    task: str,
    pad_id: int,
    tracker: Tracker,
    losses: RowLosses | None = None,
) -> np.ndarray:
    """(N,) scores of R's rows under theta_val against the base log-probs (NaN elsewhere);
    each row's mean loss before and after goes into `losses` when given."""
    model = surrogate.model
    with surrogate.scoring("val"):
        combine = stored_combine(
            model, task, base_logprobs, config.score_fn, config.token_score, losses
        )
        units = pass_units(surrogate)[1]
        return run_pass(model, pool, batches, combine, pad_id=pad_id, tracker=tracker, units=units)
