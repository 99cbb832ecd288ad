"""One attempt at one job: claim, resolve, run the engine with progress, publish atomically."""

from __future__ import annotations

import importlib
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import get_sessionmaker
from app.models import Dataset, Job, JobEvent, JobStage, JobStatus, Selection, utcnow
from app.observability import current_job_id
from app.services.results import add_selection, write_scores
from tov_engine import Cancelled, EngineError, JobConfig, ProgressEvent, SelectionOutcome
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
            validation = session.get(Dataset, job.validation_dataset_id)
            assert pool is not None and validation is not None
            config = job_config(job)
            model = resolve_model(job.model, self.settings.model_roots)
        self._progress(JobStage.RESOLVE, RESOLVE_SHARE, 0, message="inputs checked", force=True)
        started = time.monotonic()
        cache = self.settings.artifact_root / "pool-cache" if self.settings.pool_cache else None
        inputs = dict(pool_path=Path(pool.uri), validation_path=Path(validation.uri), model=model)
        if self._staged(config):
            from worker.staged_job import run_staged

            outcome = run_staged(self, heartbeat, config=config, cache_dir=cache, **inputs)
        else:
            outcome = load_entrypoint(self.settings.engine_entrypoint)(
                **inputs,
                config=config,
                progress=self._on_engine_progress,
                should_cancel=heartbeat.should_stop,
                checkpoint_dir=self.settings.artifact_root / "jobs" / self.job_id / "checkpoint",
                cache_dir=cache,
            )
        stats = {**outcome.stats, "engine_seconds": round(time.monotonic() - started, 3)}
        self._publish(outcome, stats)

    def _staged(self, config: JobConfig) -> bool:
        """Scale-out applies to ToV with LoRA on the real engine, when sharding is configured."""
        return (
            self.settings.score_shard_rows > 0
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

    def _publish(self, outcome: SelectionOutcome, stats: dict[str, Any]) -> None:
        """Scores, selection and status in one transaction that first re-checks ownership."""
        with self.sessions() as session:
            job = self._lock_owned(session)
            write_scores(
                session=session,
                job_id=job.id,
                scores=outcome.scores,
                lengths=outcome.lengths,
                base_indices=outcome.base_indices,
            )
            session.execute(delete(Selection).where(Selection.job_id == job.id))
            chosen = outcome.selection
            cfg = selection_config(job.params)
            add_selection(
                session=session,
                job_id=job.id,
                indices=chosen.indices,
                scores=chosen.scores,
                from_random=np.array([s == "random" for s in chosen.sources]),
                budget=float(cfg.budget),
                strategy=cfg.strategy,
                num_bins=cfg.num_bins,
                seed=job.seed,
                is_default=True,
            )
            scored = int(np.isfinite(outcome.scores).sum())
            job.status, job.stage, job.progress = JobStatus.SUCCEEDED, JobStage.SELECT, 1.0
            job.rows_done, job.finished_at, job.stats = scored, utcnow(), stats
            job.message = f"selected {len(chosen.indices)} of {len(outcome.scores)} rows"
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
