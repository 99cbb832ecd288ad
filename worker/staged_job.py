"""The job's own worker in a staged (scaled-out) ToV job: train, share the scoring, join.

Stages (tov_engine.staged): every round trained here and its adapters saved under the job's
folder in the artifact store; the scoring plan cut into shards of about `score_shard_rows` rows,
recorded in `job_shard`; one `tov.score_shards` message sent per extra shard so idle workers help;
this worker then scores shards too, waits for the ones others hold, takes over any whose worker
died, and joins the shards' scores into the outcome the caller publishes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.models import Dataset, Job, JobShard, JobStage
from app.core.observability import current_job_id
from app.core.queue import publish_shard_helpers
from tov_engine import Cancelled, JobConfig, ProgressEvent, SelectionOutcome
from tov_engine.staged import StagedToV, prepare_staged
from worker.engine_bridge import job_config, resolve_model
from worker.lease import Heartbeat
from worker.shards import (
    ShardScorer,
    ShardsExhausted,
    job_folder,
    job_is_live,
    load_shards,
    record_shards,
    shard_state,
    worker_identity,
)

if TYPE_CHECKING:
    from worker.job_runner import JobRunner

logger = logging.getLogger(__name__)

WAIT_SECONDS = 0.5  # between looks at the shards others hold


def run_staged(
    runner: JobRunner,
    heartbeat: Heartbeat,
    *,
    pool_path: Path,
    validation_path: Path,
    model: Path,
    config: JobConfig,
    cache_dir: Path | None,
) -> SelectionOutcome:
    settings, job_id = runner.settings, runner.job_id
    staged = prepare_staged(
        pool_path=pool_path,
        validation_path=validation_path,
        model=model,
        config=config,
        cache_dir=cache_dir,
    )
    share = staged.train_share

    def on_train(event: ProgressEvent) -> None:
        runner.report(JobStage.TRAIN, share * event.fraction, None, event.message)

    started = time.monotonic()
    staged.train(
        job_folder(settings, job_id) / "rounds",
        progress=on_train,
        should_cancel=heartbeat.should_stop,
    )
    seconds_train = time.monotonic() - started
    shards = staged.shards(settings.score_shard_rows)
    with runner.sessions() as session:
        record_shards(session, job_id, shards)
    helpers = publish_shard_helpers(job_id, min(len(shards) - 1, settings.max_shard_helpers))
    started = time.monotonic()
    _score_all(runner, heartbeat, staged)
    seconds_score = time.monotonic() - started
    outcome = staged.finish(load_shards(settings, job_id, shards), shards)
    with runner.sessions() as session:
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
    return outcome


def _score_all(runner: JobRunner, heartbeat: Heartbeat, staged: StagedToV) -> None:
    """Score shards here until every shard is done (others may hold some)."""
    settings, job_id = runner.settings, runner.job_id
    share = staged.train_share
    total = max(len(staged.rest), 1)

    def look() -> tuple[bool, list[int]]:
        """Report the shards' progress on the job; (all done, shards out of attempts)."""
        with runner.sessions() as session:
            done, count, scored, exhausted = shard_state(session, job_id, settings.max_attempts)
        fraction = share + (1 - share) * min(scored, total) / total
        message = f"{done} of {count} shards scored"
        runner.report(JobStage.SCORE, fraction, min(scored, total), message)
        return done == count, exhausted

    scorer = ShardScorer(
        runner.sessions,
        settings,
        job_id,
        staged,
        worker_identity(),
        should_stop=heartbeat.should_stop,
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
        if heartbeat.should_stop():
            raise Cancelled("cancelled by the caller")
        time.sleep(WAIT_SECONDS)


def help_with_shards(job_id: str) -> int:
    """A `tov.score_shards` message: score shards of the job until none is left to claim.

    Returns how many this worker scored (0 at once when nothing is claimable: the job finished,
    was cancelled, or its other workers took every shard).
    """
    settings, sessions = get_settings(), get_sessionmaker()
    token = current_job_id.set(job_id)
    try:
        with sessions() as session:
            job = session.get(Job, job_id)
            pending = session.scalar(
                select(func.count())
                .select_from(JobShard)
                .where(JobShard.job_id == job_id, JobShard.status != "done")
            )
            if job is None or not pending or not job_is_live(session, job_id):
                return 0
            pool = session.get(Dataset, job.pool_dataset_id)
            validation = session.get(Dataset, job.validation_dataset_id)
            assert pool is not None and validation is not None
            config = job_config(job)
            model = resolve_model(job.model, settings.model_roots)
        cache = settings.artifact_root / "pool-cache" if settings.pool_cache else None
        staged = prepare_staged(
            pool_path=Path(pool.uri),
            validation_path=Path(validation.uri),
            model=model,
            config=config,
            cache_dir=cache,
        )
        scored = ShardScorer(sessions, settings, job_id, staged, worker_identity()).run()
        logger.info("job %s: this worker scored %d shard(s)", job_id, scored)
        return scored
    finally:
        current_job_id.reset(token)
