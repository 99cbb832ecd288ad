"""The producer side of the queue: the API enqueues tasks by name and never imports the worker."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from app.core.config import Settings, get_settings

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "tov.run_job"
RESELECT_TASK = "tov.reselect"
SCORE_SHARDS_TASK = "tov.score_shards"
DELIVER_WEBHOOKS_TASK = "tov.deliver_webhooks"


def celery_config(settings: Settings) -> dict[str, object]:
    """Broker settings shared by the producer (API, reaper) and the workers."""
    # Redis: the visibility timeout must exceed the longest job, or a running job is delivered
    # again (celery#5935); fast recovery comes from the database lease instead. The SQLAlchemy
    # transport passes its options to create_engine, so it gets none.
    redis = settings.broker_url.startswith(("redis://", "rediss://"))
    transport: dict[str, object] = {"visibility_timeout": 24 * 3600} if redis else {}
    return {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],  # pickle would be remote code execution
        "result_backend": None,  # Postgres is the truth; Celery results are not used
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.task_queue,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    }


@lru_cache
def producer() -> Celery:
    app = Celery("tov-producer")
    app.conf.update(celery_config(get_settings()))
    return app


def _send(task: str, object_id: str, queue: str) -> bool:
    try:
        producer().send_task(task, args=[object_id], queue=queue)
    except Exception:  # any broker failure: the row stays unpublished, nothing is lost
        logger.warning(
            "could not publish %s %s; the reaper will retry", task, object_id, exc_info=True
        )
        return False
    return True


def publish_job(job_id: str) -> bool:
    """Send the job to the workers. False when the broker is unreachable (the reaper retries)."""
    return _send(RUN_JOB_TASK, job_id, get_settings().task_queue)


def publish_reselect(selection_id: str) -> bool:
    """Ask a worker to compute a pending selection from stored scores (no GPU)."""
    return _send(RESELECT_TASK, selection_id, get_settings().select_queue)


def publish_webhook_delivery(reason: str) -> bool:
    """Ask a worker on the select queue to send the webhook deliveries that are due (the reaper
    asks again at every sweep while some are due, so a lost message only delays them). Sends
    nothing when no delivery is pending: a tenant without webhooks costs no worker a task."""
    if not _deliveries_pending():
        return False
    return _send(DELIVER_WEBHOOKS_TASK, reason, get_settings().select_queue)


def _deliveries_pending() -> bool:
    """Whether any webhook delivery waits to be sent (True when the database cannot tell)."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from app.core.db import get_sessionmaker
    from app.core.models import WebhookDelivery, WebhookDeliveryStatus

    query = select(WebhookDelivery.id).where(
        WebhookDelivery.status == WebhookDeliveryStatus.PENDING
    )
    try:
        with get_sessionmaker()() as session:
            return session.scalar(query.limit(1)) is not None
    except SQLAlchemyError:
        return True


def publish_shard_helpers(job_id: str, count: int) -> int:
    """Ask up to `count` more workers to help score a staged job's shards. Returns how many sent.

    A helper that finds nothing left to claim exits at once, so extra messages are harmless."""
    sent = 0
    for _ in range(count):
        if not _send(SCORE_SHARDS_TASK, job_id, get_settings().task_queue):
            break  # the broker is down: the job's own worker scores every shard
        sent += 1
    return sent


def queue_depth() -> int | None:
    """Messages waiting on the job queue (Redis only; None where the transport cannot tell)."""
    settings = get_settings()
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return None
    try:
        import redis

        client = redis.Redis.from_url(settings.broker_url, socket_timeout=1)
        return int(client.llen(settings.task_queue))
    except Exception:
        return None
