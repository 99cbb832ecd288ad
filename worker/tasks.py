"""Celery tasks, named explicitly so the API can send them by name."""

from __future__ import annotations

import logging

from worker.celery_app import celery
from worker.job_runner import JobRunner
from worker.reselect import compute_selection
from worker.shard_scoring import help_with_shards
from worker.webhooks import deliver_due

logger = logging.getLogger(__name__)


@celery.task(name="tov.run_job", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> None:
    """Run one selection job to its end; duplicate deliveries exit at the claim."""
    JobRunner(job_id).run()


@celery.task(name="tov.reselect", acks_late=True, ignore_result=True)
def reselect(selection_id: str) -> None:
    """A new selection from stored scores; cheap, so it runs on the select queue."""
    compute_selection(selection_id)


@celery.task(
    name="tov.score_shards", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def score_shards(job_id: str) -> None:
    """Help score a staged job's shards (scale-out); exits when none is left to claim."""
    help_with_shards(job_id)


@celery.task(name="tov.deliver_webhooks", acks_late=True, ignore_result=True)
def deliver_webhooks(reason: str = "") -> None:
    """Send the webhook deliveries that are due (signed, each leased so none is sent twice at
    once); on the select queue, next to re-selections."""
    sent = deliver_due()
    if sent:
        logger.info("webhooks (%s): %d delivery attempt(s)", reason or "asked", sent)
