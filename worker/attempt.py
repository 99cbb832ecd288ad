"""The attempt context: what one attempt at a job hands the runner of its kind."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.models import Job, JobEvent, JobStage
from tov_engine import ProgressCallback, ProgressEvent
from worker.engine_bridge import job_folder
from worker.lease import LeaseLost, owned

RESOLVE_SHARE = 0.02  # the overall fraction reported once the inputs are checked
PROGRESS_INTERVAL = 1.0  # seconds between progress writes
ENGINE_STAGES = {"train": JobStage.TRAIN, "score": JobStage.SCORE}  # others report as SELECT


class JobProgress:
    """Writes the job's stage and progress, at most every PROGRESS_INTERVAL seconds unless forced
    or the stage changed; every write carries the attempt's ownership (LeaseLost when it has
    none). A stage change is also recorded as one `stage` event; any change of progress is
    reported to `on_change` (the watchdog), written or not."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        attempt: int,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.sessions, self.job_id, self.attempt = sessions, job_id, attempt
        self.on_change = on_change
        self._last_write = 0.0
        self._seen: tuple[str, float, int | None] | None = None
        self._stage: str | None = None  # the stage last written
        # The part of the job's work that `report` fractions cover (worker.verification splits
        # a job into the selection and its verification).
        self.span = (0.0, 1.0)

    def report(self, stage: str, fraction: float, rows_done: int | None, message: str) -> None:
        """The engine's fraction (0..1) of its work, as the job's overall progress."""
        low, high = self.span
        fraction = low + (high - low) * fraction
        overall = RESOLVE_SHARE + (1 - RESOLVE_SHARE) * fraction * 0.99
        self.write(stage, overall, rows_done, message=message)

    def write(
        self,
        stage: str,
        fraction: float,
        rows_done: int | None,
        *,
        message: str = "",
        force: bool = False,
    ) -> None:
        seen = (stage, fraction, rows_done)
        if seen != self._seen:
            self._seen = seen
            if self.on_change is not None:
                self.on_change()
        new_stage = stage != self._stage
        now = time.monotonic()
        if not (force or new_stage) and now - self._last_write < PROGRESS_INTERVAL:
            return
        self._last_write = now
        values: dict[str, Any] = {"stage": stage, "progress": fraction, "message": message[:500]}
        if rows_done is not None:
            values["rows_done"] = rows_done
        with self.sessions() as session:
            updated = session.execute(
                update(Job).where(owned(self.job_id, self.attempt)).values(**values)
            ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            if updated and new_stage:
                text = f"stage {stage}" + (f": {message}" if message else "")
                session.add(
                    JobEvent(job_id=self.job_id, kind="stage", attempt=self.attempt, message=text)
                )
            session.commit()
        if updated == 0:
            raise LeaseLost()
        self._stage = stage


@dataclass
class AttemptContext:
    """One attempt at one job, as its runner sees it.

    should_stop: polled by the engine (the heartbeat's: lease lost, cancel requested, or the
        watchdog ended the attempt).
    on_progress: called when the attempt's progress changes (the watchdog's touch).
    progress: the job's progress writer, owned by this attempt.
    """

    job_id: str
    attempt: int
    worker_name: str
    settings: Settings
    sessions: sessionmaker[Session]
    should_stop: Callable[[], bool]
    on_progress: Callable[[], None] | None = None
    progress: JobProgress = field(init=False)

    def __post_init__(self) -> None:
        self.progress = JobProgress(self.sessions, self.job_id, self.attempt, self.on_progress)

    def checkpoint_dir(self) -> Path:
        return job_folder(self.settings, self.job_id) / "checkpoint"

    def engine_progress(self, target: int | None = None, targets: int = 1) -> ProgressCallback:
        """The engine's progress events as the job's. `target` None: one run covering all
        `targets` (its fraction is the whole run's already); else the target-th of `targets`
        runs. rows_done counts scoring units per target, as a single-target job's does."""

        def on_event(event: ProgressEvent) -> None:
            stage = ENGINE_STAGES.get(event.stage, JobStage.SELECT)
            if target is None:
                fraction, done, message = event.fraction, event.done // targets, event.message
            else:
                fraction = (target + event.fraction) / targets
                done = (target * event.total + event.done) // targets
                message = f"target {target + 1} of {targets}: {event.message}"
            rows_done = done if event.stage == "score" else None
            self.progress.report(stage, fraction, rows_done, message)

        return on_event
