"""Fill in a pending selection from the job's stored scores (CPU only, seconds for 10M rows)."""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.models import Job, Selection
from app.core.queue import publish_webhook_delivery
from app.results.leaks import excluded_rows
from app.results.scores import read_base_indices, read_scores
from app.results.selections import places_bytes
from app.webhooks.outbox import selection_ready
from tov_engine import EngineError, SelectionConfig, select_excluding
from tov_engine import Selection as ChosenRows
from tov_engine.selection import selection_for_method

logger = logging.getLogger(__name__)


def compute_selection(selection_id: str) -> None:
    """Idempotent: a selection that is no longer pending is left alone.

    Each run counts as an attempt. A run that fails with an unexpected error leaves the selection
    pending, and the reaper re-sends it, until `reselect_max_attempts` runs: then it fails with
    the error named, instead of being re-sent every minute forever."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        row = session.get(Selection, selection_id)
        if row is None or row.status != "pending":
            return
        row.attempts = (row.attempts or 0) + 1
        session.commit()
        attempt = row.attempts
        try:
            _compute(session, row)
        except Exception as exc:
            session.rollback()
            logger.exception("selection %s: attempt %d failed", selection_id, attempt)
            if attempt >= settings.reselect_max_attempts:
                error = (
                    f"internal error ({type(exc).__name__}) on each of {attempt} attempts "
                    "(TOV_RESELECT_MAX_ATTEMPTS); see the worker's log"
                )
                _set_if_pending(session, selection_id, status="failed", error=error)


def _compute(session: Session, row: Selection) -> None:
    """Fill in the selection from its target's scores (`failed` for a bad request)."""
    # A multi-target job keeps scores per target: the selection reads its own target's.
    scores, lengths = read_scores(session=session, job_id=row.job_id, target=row.target)
    try:
        chosen = _select(session, row, scores, lengths)
    except (EngineError, ValueError) as exc:
        _set_if_pending(session, row.id, status="failed", error=str(exc)[:2000])
        return
    ready = session.execute(
        update(Selection)
        .where(Selection.id == row.id, Selection.status == "pending")
        .values(
            status="ready",
            size=len(chosen.indices),
            indices=np.asarray(chosen.indices, dtype="<i8").tobytes(),
            scores=np.asarray(chosen.scores, dtype="<f4").tobytes(),
            from_random=np.array([s != "score" for s in chosen.sources], dtype=np.uint8).tobytes(),
            bins=places_bytes(chosen.bins),
            bin_ranks=places_bytes(chosen.bin_ranks),
            bin_quotas=places_bytes(chosen.bin_quotas),
        )
    ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
    if ready:  # its event in the same transaction (app.webhooks.outbox)
        session.refresh(row)
        selection_ready(session, row)
    session.commit()
    if ready:
        publish_webhook_delivery("selection succeeded")
    logger.info(
        "selection %s of job %s (target %d): %d rows",
        row.id,
        row.job_id,
        row.target,
        len(chosen.indices),
    )


def _select(
    session: Session, row: Selection, scores: np.ndarray, lengths: np.ndarray
) -> ChosenRows:
    """The rows the selection's settings pick from its target's scores."""
    budget = int(row.budget) if row.budget >= 1 else row.budget
    config = SelectionConfig(
        budget=budget,
        strategy=row.strategy,
        num_bins=row.num_bins,
        min_per_bin=row.min_per_bin,
    )
    job = session.get(Job, row.job_id)
    config = selection_for_method(job.method if job is not None else "", config)
    excluded = excluded_rows(session, row.job_id, row.target, len(scores))
    return select_excluding(  # the job's leaked rows in mode "exclude" are never picked
        excluded,
        scores=scores,
        lengths=lengths,
        base_indices=read_base_indices(session=session, job_id=row.job_id, target=row.target),
        config=config,
        seed=row.seed,
    )


def _set_if_pending(session: Session, selection_id: str, **values: object) -> None:
    session.execute(
        update(Selection)
        .where(Selection.id == selection_id, Selection.status == "pending")
        .values(**values)
    )
    session.commit()
