"""One attempt at one job: claim, resolve, run the job's kind with progress, publish atomically.

The runner of the job's kind (worker.runners) does the engine's work; this module claims the
job, keeps its lease with a heartbeat, publishes the outcomes or records how the attempt ended.
"""

from __future__ import annotations

import logging
import socket
import time

from sqlalchemy.exc import InterfaceError, OperationalError

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.errors import job_error_code
from app.core.models import Job, JobStage, JobStatus
from app.core.observability import current_job_id
from tov_engine import Cancelled, EngineError
from worker.attempt import RESOLVE_SHARE, AttemptContext
from worker.engine_bridge import load_inputs
from worker.lease import Heartbeat, LeaseLost, claim_job
from worker.memory import check_job_memory
from worker.publish import attempt_stats, finish, publish
from worker.runners import choose_runner
from worker.shards import ShardsExhausted
from worker.verification import run_verified
from worker.watchdog import Watchdog

logger = logging.getLogger(__name__)


class JobRunner:
    """Runs one delivery of a job; `settings` may be replaced before `run` (tests do)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.settings = get_settings()
        self.sessions = get_sessionmaker()
        self.worker_name = f"{socket.gethostname()}:{id(self):x}"

    def run(self) -> None:
        token = current_job_id.set(self.job_id)  # every log line of this attempt names the job
        try:
            self._claim_and_run()
        finally:
            current_job_id.reset(token)

    def _claim_and_run(self) -> None:
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
        watchdog = Watchdog(self.settings)  # no progress, or running too long: the attempt ends
        heartbeat = Heartbeat(
            self.sessions,
            job_id=self.job_id,
            attempt=attempt,
            lease_seconds=self.settings.lease_seconds,
            period=self.settings.heartbeat_seconds,
            watchdog=watchdog,
            max_attempts=self.settings.max_attempts,
        )
        context = AttemptContext(
            self.job_id,
            attempt,
            worker_name=self.worker_name,
            settings=self.settings,
            sessions=self.sessions,
            should_stop=heartbeat.should_stop,
            on_progress=watchdog.touch,
        )
        heartbeat.start()
        try:
            _run_guarded(context, heartbeat)
        finally:
            heartbeat.stop()


def _run_guarded(context: AttemptContext, heartbeat: Heartbeat) -> None:
    """Run the attempt and record how it ended when it did not publish."""
    job_id, attempt = context.job_id, context.attempt
    try:
        _run_owned(context)
    except LeaseLost:
        logger.warning("job %s attempt %d stopped: lease lost", job_id, attempt)
    except Cancelled:
        if heartbeat.lost.is_set():
            logger.warning("job %s attempt %d stopped: lease lost", job_id, attempt)
        else:
            finish(context, JobStatus.CANCELLED, code="cancelled", detail="cancelled on request")
    except (OperationalError, InterfaceError):
        # The database went away (restart, failover, a dropped connection). Nothing can be
        # recorded now: stop, let the lease lapse, and the reaper re-sends the job, which
        # resumes from its checkpoints (attempts stay capped). Marking it failed here would
        # turn a blip into a failed job whenever the database is back a moment later.
        logger.warning(
            "job %s attempt %d stopped: database unavailable; the reaper will retry",
            job_id,
            attempt,
            exc_info=True,
        )
    except ShardsExhausted as exc:
        finish(context, JobStatus.FAILED, code="shard_failed", detail=str(exc))
    except EngineError as exc:
        logger.info("job %s failed: %s", job_id, exc)
        code = job_error_code(type(exc).__name__) or "engine_error"
        finish(context, JobStatus.FAILED, code=code, detail=str(exc))
    except Exception as exc:
        logger.exception("job %s attempt %d crashed", job_id, attempt)
        detail = f"internal error ({type(exc).__name__})"
        finish(context, JobStatus.FAILED, code="internal_error", detail=detail)


def _run_owned(context: AttemptContext) -> None:
    """Resolve the inputs, run the job's kind, publish its outcomes."""
    with context.sessions() as session:
        job = session.get(Job, context.job_id)
        assert job is not None
        inputs = load_inputs(session, job, context.settings)
    check_job_memory(inputs, context.settings)  # before the model loads (InsufficientMemory)
    context.progress.write(JobStage.RESOLVE, RESOLVE_SHARE, 0, message="inputs checked", force=True)
    started = time.monotonic()
    runner = choose_runner(context.settings, inputs)
    if inputs.verify is None:
        outcomes, report = runner(context, inputs), None
    else:  # select on the kept validation rows, then verify on the held-out ones
        outcomes, report = run_verified(context, inputs, runner)
    publish(context, outcomes, attempt_stats(outcomes, time.monotonic() - started), report)
