"""Webhook requests: register an endpoint (its signing secret is shown once), list, show,
delete, and the deliveries of one endpoint with their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from tov_client.transport import Transport, drop_none

EVENT_TYPES = ("job.succeeded", "job.failed", "job.cancelled", "selection.succeeded")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Webhook(_Model):
    """An endpoint the server signs and sends events to (Standard Webhooks)."""

    id: str
    url: str
    event_types: list[str] = []
    description: str | None = None
    job_id: str | None = None
    created_at: datetime
    links: dict[str, str] = {}
    secret: str | None = None
    """The signing secret (``whsec_...``): only in the answer that created the endpoint."""


class WebhookPage(_Model):
    items: list[Webhook]
    next_cursor: str | None = None


class WebhookDelivery(_Model):
    """One event sent to one endpoint: its status and every attempt."""

    id: str
    event_id: str
    event_type: str
    job_id: str | None = None
    status: str
    attempts: int
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    created_at: datetime
    attempt_log: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}


class WebhookDeliveryPage(_Model):
    items: list[WebhookDelivery]
    next_cursor: str | None = None


class WebhooksApi(Transport):
    """The ``/v1/webhooks`` part of ``Client``."""

    def create_webhook(
        self,
        url: str,
        *,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Webhook:
        """Register an https:// receiver for ``event_types`` (default: all four). Keep the
        returned ``secret``: it verifies the deliveries and is never shown again."""
        body = drop_none(
            {
                "url": url,
                "event_types": list(event_types) if event_types else None,
                "description": description,
            }
        )
        return Webhook.model_validate(self._request("POST", "/v1/webhooks", json=body).json())

    def webhook_page(self, *, limit: int = 50, cursor: str | None = None) -> WebhookPage:
        """One page of this tenant's endpoints, newest first."""
        params = drop_none({"limit": limit, "cursor": cursor})
        return WebhookPage.model_validate(
            self._request("GET", "/v1/webhooks", params=params).json()
        )

    def list_webhooks(self) -> list[Webhook]:
        """Every endpoint of this tenant, newest first."""
        found: list[Webhook] = []
        cursor: str | None = None
        while True:
            page = self.webhook_page(limit=200, cursor=cursor)
            found.extend(page.items)
            if not page.next_cursor:
                return found
            cursor = page.next_cursor

    def get_webhook(self, webhook_id: str) -> Webhook:
        return Webhook.model_validate(self._request("GET", f"/v1/webhooks/{webhook_id}").json())

    def delete_webhook(self, webhook_id: str) -> None:
        """Remove the endpoint; its pending deliveries are never sent."""
        self._request("DELETE", f"/v1/webhooks/{webhook_id}")

    def webhook_deliveries(
        self,
        webhook_id: str,
        *,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
    ) -> WebhookDeliveryPage:
        """One page of the endpoint's deliveries, newest first (``status``: pending,
        delivered or failed), each with its attempts."""
        params = drop_none({"limit": limit, "cursor": cursor, "status": status})
        response = self._request("GET", f"/v1/webhooks/{webhook_id}/deliveries", params=params)
        return WebhookDeliveryPage.model_validate(response.json())
