"""Webhook schemas: an endpoint as created and as listed, and its deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas import Strict

EventType = Literal["job.succeeded", "job.failed", "job.cancelled", "selection.succeeded"]
ALL_EVENT_TYPES: list[EventType] = [
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "selection.succeeded",
]


class WebhookCreate(Strict):
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="the receiver: https:// on a public address (the SSRF rules of https:// "
        "dataset references)",
    )
    event_types: list[EventType] = Field(
        default_factory=lambda: list(ALL_EVENT_TYPES),
        min_length=1,
        description="the events to send (default: all four)",
    )
    description: str | None = Field(default=None, max_length=500)


class WebhookRead(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str | None
    job_id: str | None = Field(
        description="set on a job's own notify_url endpoint (it gets that job's events only)"
    )
    created_at: datetime
    links: dict[str, str]


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="the signing secret (whsec_...): shown in this answer only; verify each "
        "delivery with it (Standard Webhooks)"
    )


class WebhookList(BaseModel):
    items: list[WebhookRead]
    next_cursor: str | None


class DeliveryRead(BaseModel):
    id: str
    event_id: str = Field(description="the webhook-id header; the same on every attempt")
    event_type: str
    job_id: str | None
    status: str = Field(description="pending | delivered | failed")
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: list[dict[str, Any]] = Field(
        description="every attempt: attempt, at, status_code, error, duration_ms"
    )
    payload: dict[str, Any]


class DeliveryList(BaseModel):
    items: list[DeliveryRead]
    next_cursor: str | None
