"""A staged (scaled-out) ToV job, run by the job's own worker: train, share the scoring, join.

Stages (tov_engine.StagedToV): every round trained here in the job's local scratch folder (rounds
another host already trained are fetched from the artifact store first) and its adapters sent to
the store, where helpers on other hosts fetch them; the scoring plan cut into shards of about
`score_shard_rows` rows, recorded in `job_shard`; one `tov.score_shards` message sent per extra
shard so idle workers help; this worker then scores shards too, waits for the ones others hold,
takes over any whose worker died, and joins the shards' scores into the outcome the caller
publishes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.core.models import JobShard, JobStage
from app.core.queue import publish_shard_helpers
from tov_engine import Cancelled, ProgressEvent, SelectionOutcome, StagedToV, prepare_staged
from worker.attempt import AttemptContext
from worker.engine_bridge import JobInputs
from worker.shard_scoring import ShardScorer
from worker.shards import (
    ShardsExhausted,
    load_shards,
    record_shards,
    rounds_folder,
    shard_state,
    sync_rounds,
    worker_identity,
)

WAIT_SECONDS = 0.5  # between looks at the shards others hold


def run(context: AttemptContext, inputs: JobInputs) -> list[SelectionOutcome]:
    settings, job_id = context.settings, context.job_id
    staged = prepare_staged(**inputs.engine_kwargs())
    share = staged.train_share

    def on_train(event: ProgressEvent) -> None:
        context.progress.report(JobStage.TRAIN, share * event.fraction, None, event.message)

    started = time.monotonic()
    sync_rounds(settings, job_id, upload=False)  # a resumed attempt: rounds trained elsewhere
    staged.train(
        rounds_folder(settings, job_id),
        progress=on_train,
        should_cancel=context.should_stop,
    )
    sync_rounds(settings, job_id, upload=True)  # before any helper is asked
    seconds_train = time.monotonic() - started
    shards = staged.shards(settings.score_shard_rows)
    with context.sessions() as session:
        record_shards(session, job_id, shards)
    helpers = publish_shard_helpers(job_id, min(len(shards) - 1, settings.max_shard_helpers))
    started = time.monotonic()
    _score_all(context, staged)
    seconds_score = time.monotonic() - started
    outcome = staged.finish(load_shards(settings, job_id, shards), shards)
    with context.sessions() as session:
        workers = Counter(
            session.scalars(select(JobShard.worker).where(JobShard.job_id == job_id)).all()
        )
    extra: dict[str, Any] = {  # stats are JSON: the split between workers goes in too
        "seconds_train_wall": round(seconds_train, 3),
        "seconds_score_wall": round(seconds_score, 3),
        "shard_helpers_asked": helpers,
        "shards_by_worker": dict(workers),
    }
    outcome.stats.update(extra)
    return [outcome]


def _score_all(context: AttemptContext, staged: StagedToV) -> None:
    """Score shards here until every shard is done (others may hold some)."""
    settings = context.settings
    look = _shard_watcher(context, staged)
    scorer = ShardScorer(
        context.sessions,
        settings,
        context.job_id,
        staged,
        worker_identity(),
        should_stop=context.should_stop,
        after_progress=look,
    )
    while True:
        scorer.run()
        finished, exhausted = look()
        if finished:
            return
        if exhausted:
            raise ShardsExhausted(
                f"shard(s) {exhausted[:5]} lost their worker {settings.max_attempts} times "
                "(out of memory or killed?)"
            )
        if context.should_stop():
            raise Cancelled("cancelled by the caller")
        time.sleep(WAIT_SECONDS)


def _shard_watcher(
    context: AttemptContext, staged: StagedToV
) -> Callable[[], tuple[bool, list[int]]]:
    """A look at the shards that reports their progress on the job and returns
    (all done, shards out of attempts)."""
    share = staged.train_share
    total = max(len(staged.rest), 1)

    def look() -> tuple[bool, list[int]]:
        with context.sessions() as session:
            done, count, scored, exhausted = shard_state(
                session, context.job_id, context.settings.max_attempts
            )
        fraction = share + (1 - share) * min(scored, total) / total
        message = f"{done} of {count} shards scored"
        context.progress.report(JobStage.SCORE, fraction, min(scored, total), message)
        return done == count, exhausted

    return look
