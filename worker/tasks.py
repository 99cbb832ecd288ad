"""Celery tasks, named explicitly so the API can send them by name."""

from __future__ import annotations

import logging

from worker.celery_app import celery
from worker.job_runner import JobRunner

logger = logging.getLogger(__name__)


@celery.task(name="tov.run_job", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> None:
    """Run one selection job to its end; duplicate deliveries exit at the claim."""
    JobRunner(job_id).run()
