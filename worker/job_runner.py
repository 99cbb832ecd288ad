"""One attempt at one job: claim, resolve, run the engine with progress, publish atomically."""

from __future__ import annotations

import importlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.models import (
    Dataset,
    Job,
    JobEvent,
    JobStage,
    JobStatus,
    ScoreChunk,
    Selection,
    utcnow,
)
from app.core.observability import current_job_id
from app.services.jobs import target_dataset_ids
from app.services.results import add_selection, write_scores
from tov_engine import (
    Cancelled,
    DataError,
    EngineError,
    JobConfig,
    ProgressCallback,
    ProgressEvent,
    SelectionOutcome,
    run_multi_target,
)
from worker.engine_bridge import job_config, resolve_model, selection_config
from worker.lease import Heartbeat, claim_job, owned
from worker.shards import ShardsExhausted

logger = logging.getLogger(__name__)

RESOLVE_SHARE = 0.02  # the overall fraction reported once the inputs are checked
PROGRESS_INTERVAL = 1.0  # seconds between progress writes
ENGINE = "tov_engine:run_selection"


def load_entrypoint(spec: str) -> Callable[..., SelectionOutcome]:
    """`module:function`, e.g. tov_engine:run_selection."""
    module, _, name = spec.partition(":")
    return cast(Callable[..., SelectionOutcome], getattr(importlib.import_module(module), name))


class LeaseLost(Exception):
    """Another attempt owns the job now; this one must stop without writing."""


class JobRunner:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.settings = get_settings()
        self.sessions = get_sessionmaker()
        self.worker_name = f"{socket.gethostname()}:{id(self):x}"
        self.attempt = 0
        self._last_progress = 0.0

    def run(self) -> None:
        token = current_job_id.set(self.job_id)  # every log line of this attempt names the job
        try:
            self._run()
        finally:
            current_job_id.reset(token)

    def _run(self) -> None:
        with self.sessions() as session:
            attempt = claim_job(
                session,
                job_id=self.job_id,
                worker=self.worker_name,
                lease_seconds=self.settings.lease_seconds,
                max_attempts=self.settings.max_attempts,
            )
        if attempt is None:
            logger.info("job %s: not claimable (duplicate delivery or finished)", self.job_id)
            return
        self.attempt = attempt
        heartbeat = Heartbeat(
            self.sessions,
            job_id=self.job_id,
            attempt=attempt,
            lease_seconds=self.settings.lease_seconds,
            period=self.settings.heartbeat_seconds,
        )
        heartbeat.start()
        try:
            self._run_owned(heartbeat)
        except LeaseLost:
            logger.warning("job %s attempt %d stopped: lease lost", self.job_id, attempt)
        except Cancelled:
            if heartbeat.lost.is_set():
                logger.warning("job %s attempt %d stopped: lease lost", self.job_id, attempt)
            else:
                self._finish(JobStatus.CANCELLED, code="cancelled", detail="cancelled on request")
        except (OperationalError, InterfaceError):
            # The database went away (restart, failover, a dropped connection). Nothing can be
            # recorded now: stop, let the lease lapse, and the reaper re-sends the job, which
            # resumes from its checkpoints (attempts stay capped). Marking it failed here would
            # turn a blip into a failed job whenever the database is back a moment later.
            logger.warning(
                "job %s attempt %d stopped: database unavailable; the reaper will retry",
                self.job_id,
                attempt,
                exc_info=True,
            )
        except ShardsExhausted as exc:
            self._finish(JobStatus.FAILED, code="shard_failed", detail=str(exc))
        except EngineError as exc:
            logger.info("job %s failed: %s", self.job_id, exc)
            self._finish(JobStatus.FAILED, code=type(exc).__name__, detail=str(exc))
        except Exception as exc:
            logger.exception("job %s attempt %d crashed", self.job_id, attempt)
            self._finish(
                JobStatus.FAILED,
                code="internal_error",
                detail=f"internal error ({type(exc).__name__})",
            )
        finally:
            heartbeat.stop()

    def _run_owned(self, heartbeat: Heartbeat) -> None:
        with self.sessions() as session:
            job = session.get(Job, self.job_id)
            assert job is not None
            pool = session.get(Dataset, job.pool_dataset_id)
            assert pool is not None
            validations = []
            for k, dataset_id in enumerate(target_dataset_ids(job)):
                dataset = session.get(Dataset, dataset_id)
                if dataset is None:
                    reason = f"the validation dataset of target {k} no longer exists"
                    raise DataError(dataset_id, 0, "", reason)
                validations.append(Path(dataset.uri))
            config = job_config(job)
            model = resolve_model(job.model, self.settings.model_roots)
        self._progress(JobStage.RESOLVE, RESOLVE_SHARE, 0, message="inputs checked", force=True)
        started = time.monotonic()
        cache = self.settings.artifact_root / "pool-cache" if self.settings.pool_cache else None
        if len(validations) > 1:
            outcomes = self._run_targets(
                Path(pool.uri), validations, model, config, heartbeat, cache
            )
            stats: dict[str, Any] = {
                "engine_seconds": round(time.monotonic() - started, 3),
                "k": len(outcomes),
                "targets": [dict(o.stats) for o in outcomes],
            }
            self._publish(outcomes, stats)
            return
        inputs = dict(pool_path=Path(pool.uri), validation_path=validations[0], model=model)
        if self._staged(config, pool.rows, targets=1):
            from worker.staged_job import run_staged

            outcome = run_staged(self, heartbeat, config=config, cache_dir=cache, **inputs)
        else:
            outcome = load_entrypoint(self.settings.engine_entrypoint)(
                **inputs,
                config=config,
                progress=self._on_engine_progress,
                should_cancel=heartbeat.should_stop,
                checkpoint_dir=self._checkpoint_dir(),
                cache_dir=cache,
            )
        stats = {**outcome.stats, "engine_seconds": round(time.monotonic() - started, 3)}
        self._publish([outcome], stats)

    def _checkpoint_dir(self) -> Path:
        return self.settings.artifact_root / "jobs" / self.job_id / "checkpoint"

    def _run_targets(
        self,
        pool_path: Path,
        validation_paths: list[Path],
        model: Path,
        config: JobConfig,
        heartbeat: Heartbeat,
        cache: Path | None,
    ) -> list[SelectionOutcome]:
        """A multi-target job (K > 1), unsharded. The real engine runs all K targets in one
        run_multi_target call that shares the validation-free work; a replaced entry point
        (TOV_ENGINE_ENTRYPOINT, e.g. the fault tests' stand-in) is called once per target, in
        order, with that target's validation file and its own checkpoint folder
        (checkpoint/target_NNN, the layout run_multi_target uses): the same outcomes, no sharing.
        """
        k = len(validation_paths)
        if self.settings.engine_entrypoint == ENGINE:
            return run_multi_target(
                pool_path=pool_path,
                validation_paths=validation_paths,
                model=model,
                config=config,
                progress=self._target_progress(None, k),
                should_cancel=heartbeat.should_stop,
                checkpoint_dir=self._checkpoint_dir(),
                cache_dir=cache,
            )
        entrypoint = load_entrypoint(self.settings.engine_entrypoint)
        return [
            entrypoint(
                pool_path=pool_path,
                validation_path=path,
                model=model,
                config=config,
                progress=self._target_progress(j, k),
                should_cancel=heartbeat.should_stop,
                checkpoint_dir=self._checkpoint_dir() / f"target_{j:03d}",
                cache_dir=cache,
            )
            for j, path in enumerate(validation_paths)
        ]

    def _target_progress(self, j: int | None, k: int) -> ProgressCallback:
        """Progress of a K-target run as the job's: `j` None for one run covering all targets
        (its fraction is the whole run's already), else the j-th of K runs. rows_done counts
        scoring units per target, as a single-target job's does."""

        def on_event(event: ProgressEvent) -> None:
            stage = {"train": JobStage.TRAIN, "score": JobStage.SCORE}.get(
                event.stage, JobStage.SELECT
            )
            if j is None:
                fraction, done, message = event.fraction, event.done // k, event.message
            else:
                fraction = (j + event.fraction) / k
                done = (j * event.total + event.done) // k
                message = f"target {j + 1} of {k}: {event.message}"
            self.report(stage, fraction, done if event.stage == "score" else None, message)

        return on_event

    def _staged(self, config: JobConfig, pool_rows: int, targets: int = 1) -> bool:
        """Scale-out: single-target ToV with LoRA on the real engine, for pools of more than one
        shard; multi-target jobs (targets > 1) run unsharded."""
        return (
            targets == 1
            and 0 < self.settings.score_shard_rows < pool_rows
            and self.settings.engine_entrypoint == ENGINE
            and config.method == "tov"
            and config.tov.lora.enabled
        )

    def _on_engine_progress(self, event: ProgressEvent) -> None:
        stage = {"train": JobStage.TRAIN, "score": JobStage.SCORE}.get(event.stage, JobStage.SELECT)
        rows_done = event.done if event.stage == "score" else None
        self.report(stage, event.fraction, rows_done, event.message)

    def report(self, stage: str, fraction: float, rows_done: int | None, message: str) -> None:
        """The engine's fraction (0..1) of its work, as the job's overall progress."""
        overall = RESOLVE_SHARE + (1 - RESOLVE_SHARE) * fraction * 0.99
        self._progress(stage, overall, rows_done, message=message)

    def _progress(
        self,
        stage: str,
        fraction: float,
        rows_done: int | None,
        *,
        message: str = "",
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        values: dict[str, Any] = {"stage": stage, "progress": fraction, "message": message[:500]}
        if rows_done is not None:
            values["rows_done"] = rows_done
        with self.sessions() as session:
            updated = session.execute(
                update(Job).where(owned(self.job_id, self.attempt)).values(**values)
            ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            session.commit()
        if updated == 0:
            raise LeaseLost()

    def _publish(self, outcomes: Sequence[SelectionOutcome], stats: dict[str, Any]) -> None:
        """Every target's scores and default selection, and the status, in one transaction that
        first re-checks ownership (outcomes in target order; one for a single-target job)."""
        with self.sessions() as session:
            job = self._lock_owned(session)
            if job.cancel_requested:  # asked after the last heartbeat: the cancel wins, no result
                raise Cancelled("cancelled before the results were published")
            session.execute(delete(ScoreChunk).where(ScoreChunk.job_id == job.id))
            session.execute(delete(Selection).where(Selection.job_id == job.id))
            cfg = selection_config(job.params)
            for target, outcome in enumerate(outcomes):
                write_scores(
                    session=session,
                    job_id=job.id,
                    scores=outcome.scores,
                    lengths=outcome.lengths,
                    base_indices=outcome.base_indices,
                    target=target,
                )
                chosen = outcome.selection
                add_selection(
                    session=session,
                    job_id=job.id,
                    indices=chosen.indices,
                    scores=chosen.scores,
                    from_random=np.array([s == "random" for s in chosen.sources]),
                    budget=float(cfg.budget),
                    strategy=cfg.strategy,
                    num_bins=cfg.num_bins,
                    min_per_bin=cfg.min_per_bin,
                    seed=job.seed,
                    is_default=True,
                    target=target,
                )
            scored = max(int(np.isfinite(o.scores).sum()) for o in outcomes)
            sizes = ", ".join(str(len(o.selection.indices)) for o in outcomes)
            job.status, job.stage, job.progress = JobStatus.SUCCEEDED, JobStage.SELECT, 1.0
            job.rows_done, job.finished_at, job.stats = scored, utcnow(), stats
            job.message = f"selected {sizes} of {len(outcomes[0].scores)} rows" + (
                f" for {len(outcomes)} targets" if len(outcomes) > 1 else ""
            )
            session.add(
                JobEvent(job_id=job.id, kind="succeeded", attempt=self.attempt, message=job.message)
            )
            session.commit()

    def _lock_owned(self, session: Session) -> Job:
        job = session.scalar(select(Job).where(owned(self.job_id, self.attempt)).with_for_update())
        if job is None:
            raise LeaseLost()
        return job

    def _finish(self, status: JobStatus, *, code: str, detail: str) -> None:
        with self.sessions() as session:
            updated = session.execute(
                update(Job)
                .where(owned(self.job_id, self.attempt))
                .values(
                    status=status,
                    error_code=None if status == JobStatus.CANCELLED else code,
                    error=None if status == JobStatus.CANCELLED else detail[:4000],
                    message=detail[:500],
                    finished_at=utcnow(),
                )
            ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            if updated:
                session.add(
                    JobEvent(
                        job_id=self.job_id,
                        kind=str(status),
                        attempt=self.attempt,
                        message=detail[:4000],
                    )
                )
            session.commit()
