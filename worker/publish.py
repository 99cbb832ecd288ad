"""The end of an attempt: its outcomes published atomically, or the job finished without them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.core.models import Job, JobEvent, JobStage, JobStatus, ScoreChunk, Selection, utcnow
from app.core.queue import publish_webhook_delivery
from app.jobs.service import decontaminate_ids, target_dataset_ids
from app.results.leaks import write_leaks
from app.results.scores import RowExplanations, write_scores
from app.results.selections import add_selection
from app.webhooks.outbox import job_ended
from tov_engine import Cancelled, SelectionConfig, SelectionOutcome
from worker.attempt import AttemptContext
from worker.engine_bridge import selection_config
from worker.lease import LeaseLost, owned


def attempt_stats(outcomes: Sequence[SelectionOutcome], engine_seconds: float) -> dict[str, Any]:
    """The job's stats: a single target's engine stats, or one entry per target."""
    seconds = round(engine_seconds, 3)
    if len(outcomes) > 1:
        return {
            "engine_seconds": seconds,
            "k": len(outcomes),
            "targets": [dict(o.stats) for o in outcomes],
        }
    return {**outcomes[0].stats, "engine_seconds": seconds}


def publish(
    context: AttemptContext,
    outcomes: Sequence[SelectionOutcome],
    stats: dict[str, Any],
    verify_report: dict[str, Any] | None = None,
) -> None:
    """Every target's scores and default selection, and the status, in one transaction that
    first re-checks ownership (outcomes in target order; one for a single-target job), with the
    verification's report when the job asked for one (worker.verification)."""
    with context.sessions() as session:
        job = _lock_owned(context, session)
        if job.cancel_requested:  # asked after the last heartbeat: the cancel wins, no result
            raise Cancelled("cancelled before the results were published")
        session.execute(delete(ScoreChunk).where(ScoreChunk.job_id == job.id))
        session.execute(delete(Selection).where(Selection.job_id == job.id))
        config = selection_config(job.params)
        for target, outcome in enumerate(outcomes):
            _add_target(session, job, outcome, target, config)
        write_leaks(session, job.id, leak_rows(job, outcomes))
        job.leak_count = max(len({x.pool_index for x in o.leaks}) for o in outcomes)
        scored = max(int(np.isfinite(o.scores).sum()) for o in outcomes)
        sizes = ", ".join(str(len(o.selection.indices)) for o in outcomes)
        job.status, job.stage, job.progress = JobStatus.SUCCEEDED, JobStage.SELECT, 1.0
        job.rows_done, job.finished_at, job.stats = scored, utcnow(), stats
        if verify_report is not None:
            job.verify_report = verify_report
        job.message = f"selected {sizes} of {len(outcomes[0].scores)} rows" + (
            f" for {len(outcomes)} targets" if len(outcomes) > 1 else ""
        )
        session.add(
            JobEvent(job_id=job.id, kind="succeeded", attempt=context.attempt, message=job.message)
        )
        job_ended(session, job.id)
        session.commit()
    publish_webhook_delivery("job succeeded")


def _add_target(
    session: Session, job: Job, outcome: SelectionOutcome, target: int, config: SelectionConfig
) -> None:
    """One target's scores and its default selection."""
    write_scores(
        session=session,
        job_id=job.id,
        scores=outcome.scores,
        lengths=outcome.lengths,
        base_indices=outcome.base_indices,
        target=target,
        explanations=row_explanations(outcome),
    )
    chosen = outcome.selection
    add_selection(
        session=session,
        job_id=job.id,
        indices=chosen.indices,
        scores=chosen.scores,
        from_random=np.array([s != "score" for s in chosen.sources]),
        **_selection_settings(config),
        seed=job.seed,
        is_default=True,
        target=target,
        places=(chosen.bins, chosen.bin_ranks, chosen.bin_quotas),
    )


def leak_rows(job: Job, outcomes: Sequence[SelectionOutcome]) -> list[dict[str, Any]]:
    """Every target's leaks as stored, the matched file named by its dataset id."""
    validation, decontaminate = target_dataset_ids(job), decontaminate_ids(job)
    rows = []
    for target, outcome in enumerate(outcomes):
        for leak in outcome.leaks:
            if leak.source == "validation":
                dataset = validation[target]
            elif leak.reference_index < len(decontaminate):
                dataset = decontaminate[leak.reference_index]
            else:  # an engine given files the job does not name: keep the file's name
                dataset = leak.reference.rsplit("/", 1)[-1]
            rows.append({**leak.as_dict(), "target": target, "dataset_id": dataset})
    return rows


def row_explanations(outcome: SelectionOutcome) -> RowExplanations | None:
    """The outcome's per-row explanations as stored (None when the method gives none)."""
    if outcome.binning is None and outcome.loss_before is None:
        return None
    size = len(outcome.scores)
    nan = np.full(size, np.nan, dtype=np.float32)
    none = np.full(size, -1, dtype=np.int32)
    placed = outcome.binning
    return RowExplanations(
        loss_before=nan if outcome.loss_before is None else outcome.loss_before,
        loss_after=nan if outcome.loss_after is None else outcome.loss_after,
        bins=none if placed is None else placed.bins,
        bin_ranks=none if placed is None else placed.ranks,
    )


def _selection_settings(config: SelectionConfig) -> dict[str, Any]:
    """The job's selection settings as a stored selection keeps them (the budget a float)."""
    return {
        "budget": float(config.budget),
        "strategy": config.strategy,
        "num_bins": config.num_bins,
        "min_per_bin": config.min_per_bin,
    }


def _lock_owned(context: AttemptContext, session: Session) -> Job:
    query = select(Job).where(owned(context.job_id, context.attempt)).with_for_update()
    job = session.scalar(query)
    if job is None:
        raise LeaseLost()
    return job


def finish(context: AttemptContext, status: JobStatus, *, code: str, detail: str) -> None:
    """The job ended without results (failed or cancelled), if this attempt still owns it."""
    cancelled = status == JobStatus.CANCELLED
    with context.sessions() as session:
        updated = session.execute(
            update(Job)
            .where(owned(context.job_id, context.attempt))
            .values(
                status=status,
                error_code=None if cancelled else code,
                error=None if cancelled else detail[:4000],
                message=detail[:500],
                finished_at=utcnow(),
            )
        ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
        if updated:
            event = JobEvent(
                job_id=context.job_id,
                kind=str(status),
                attempt=context.attempt,
                message=detail[:4000],
            )
            session.add(event)
            job_ended(session, context.job_id)
        session.commit()
    if updated:
        publish_webhook_delivery(f"job {status}")
