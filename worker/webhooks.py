"""Sending webhook deliveries: signed (Standard Webhooks), retried on a back-off schedule.

A delivery is claimed with `FOR UPDATE SKIP LOCKED` and leased (its `next_attempt_at` moved past
the request's time limit, its attempt counted) in a short transaction, sent with no transaction
open, and its outcome written only if the claim still stands. So two workers never send the same
delivery at once, one that answered 2xx is never sent again, and a worker that dies mid-send
leaves the delivery due again once the lease lapses (the receiver may then see that event id
twice: receivers deduplicate on `webhook-id`, as the spec asks). The reaper asks for a run at each
sweep while some delivery is due, so deliveries survive worker restarts.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook as Signer

from app.core.config import Settings, get_settings
from app.core.db import get_sessionmaker
from app.core.models import (
    Webhook,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEvent,
    utcnow,
)
from app.webhooks.urls import WebhookUrlRefused, parse_receiver, resolve_receiver

logger = logging.getLogger(__name__)

LEASE_EXTRA_SECONDS = 30.0  # beyond the request's time limit, before a claim counts as lost
MAX_PER_RUN = 200  # deliveries one run sends at most; the next sweep asks for another run
MAX_LOG_ENTRIES = 50
USER_AGENT = "tov-select-webhooks/1"


@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    attempt: int
    url: str
    secret: str
    event_id: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def deliver_due(settings: Settings | None = None, *, limit: int = MAX_PER_RUN) -> int:
    """Send deliveries that are due, one at a time, until none is left or `limit` were tried.
    Returns how many were tried."""
    settings = settings or get_settings()
    sessions = get_sessionmaker()
    tried = 0
    while tried < limit:
        with sessions() as session:
            claimed = claim_next(session, settings)
        if claimed is None:
            break
        outcome = send(claimed, settings)
        with sessions() as session:
            record(session, settings, claimed, outcome)
        tried += 1
    return tried


def due_count(session: Session, now: datetime | None = None) -> int:
    """Pending deliveries whose next attempt is due (the reaper's question)."""
    rows = session.scalars(
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == WebhookDeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= (now or utcnow()),
        )
        .limit(100)
    ).all()
    return len(rows)


def claim_next(session: Session, settings: Settings) -> Claimed | None:
    """Lock one due delivery (skipping those another worker holds), count its attempt and lease
    it past the request's time limit; committed before anything is sent."""
    now = utcnow()
    row = session.scalar(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == WebhookDeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if row is None:
        session.rollback()
        return None
    endpoint = session.get(Webhook, row.webhook_id)
    event = session.get(WebhookEvent, row.event_id)
    if endpoint is None or event is None:  # deleted meanwhile: the cascade removes the row too
        session.rollback()
        return None
    row.attempts += 1
    lease = settings.webhook_timeout_seconds + LEASE_EXTRA_SECONDS
    row.next_attempt_at = now + timedelta(seconds=lease)
    claimed = Claimed(
        delivery_id=row.id,
        attempt=row.attempts,
        url=endpoint.url,
        secret=endpoint.secret,
        event_id=event.id,
        body=json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode(),
    )
    session.commit()
    return claimed


def signed_headers(claimed: Claimed, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: id, timestamp and the signature over id.timestamp.body."""
    signature = Signer(claimed.secret).sign(claimed.event_id, at, claimed.body)
    return {
        "webhook-id": claimed.event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _ssl_context() -> ssl.SSLContext | bool:
    """How receivers' certificates are verified: the default trust store (tests swap in theirs)."""
    return True


def send(claimed: Claimed, settings: Settings) -> Outcome:
    """One POST to the receiver, to the address its name resolved to once (checked again now:
    a name that came to resolve to a private address is refused). Redirects are not followed;
    the answer's body is not read."""
    started = time.monotonic()

    def done(status_code: int | None, error: str | None) -> Outcome:
        return Outcome(status_code, error, int((time.monotonic() - started) * 1000))

    try:
        receiver = parse_receiver(claimed.url, settings)
        address = resolve_receiver(receiver, settings)
    except WebhookUrlRefused as exc:
        return done(None, exc.detail[:500])
    literal = f"[{address}]" if ":" in address else address
    url = f"{receiver.scheme}://{literal}:{receiver.port}{receiver.path}"
    default_port = 443 if receiver.scheme == "https" else 80
    host = receiver.host if receiver.port == default_port else f"{receiver.host}:{receiver.port}"
    headers = {**signed_headers(claimed, utcnow()), "host": host}
    extensions = {"sni_hostname": receiver.host} if receiver.scheme == "https" else {}
    try:
        with (
            httpx.Client(
                timeout=settings.webhook_timeout_seconds,
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: the address is the checked one
                verify=_ssl_context(),
            ) as client,
            client.stream(
                "POST", url, content=claimed.body, headers=headers, extensions=extensions
            ) as response,
        ):
            status = response.status_code
    except httpx.HTTPError as exc:
        return done(None, f"{type(exc).__name__}: {str(exc)[:300]}")
    if 200 <= status < 300:
        return done(status, None)
    if 300 <= status < 400:
        where = response.headers.get("location", "")[:200]
        return done(status, f"HTTP {status}: a redirect to '{where}' (not followed)")
    return done(status, f"HTTP {status}")


def next_attempt(settings: Settings, attempts: int, now: datetime) -> datetime | None:
    """When attempt `attempts + 1` is due after attempt `attempts` failed; None: none is left."""
    schedule = settings.webhook_retry_schedule
    if attempts >= len(schedule):
        return None
    return now + timedelta(seconds=schedule[attempts])


def record(session: Session, settings: Settings, claimed: Claimed, outcome: Outcome) -> bool:
    """Write the attempt's outcome if the claim still stands (same attempt, still pending).
    Returns False when it no longer did (the delivery or its endpoint was deleted)."""
    row = session.scalar(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.id == claimed.delivery_id,
            WebhookDelivery.attempts == claimed.attempt,
            WebhookDelivery.status == WebhookDeliveryStatus.PENDING,
        )
        .with_for_update()
    )
    if row is None:
        session.rollback()
        return False
    now = utcnow()
    entry = {
        "attempt": claimed.attempt,
        "at": now.isoformat(),
        "status_code": outcome.status_code,
        "error": outcome.error,
        "duration_ms": outcome.duration_ms,
    }
    values: dict[str, object] = {
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "attempt_log": [*(row.attempt_log or []), entry][-MAX_LOG_ENTRIES:],
    }
    if outcome.delivered:
        values.update(
            status=WebhookDeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None
        )
    else:
        due = next_attempt(settings, claimed.attempt, now)
        if due is None:
            values.update(status=WebhookDeliveryStatus.FAILED, next_attempt_at=None)
        else:
            values["next_attempt_at"] = due
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == row.id).values(**values))
    session.commit()
    logger.info(
        "webhook delivery %s (event %s) attempt %d: %s",
        claimed.delivery_id,
        claimed.event_id,
        claimed.attempt,
        "delivered" if outcome.delivered else outcome.error,
    )
    return True
