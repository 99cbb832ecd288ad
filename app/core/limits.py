"""Resource limits (OWASP API4): request body sizes, per-tenant request rate and job quotas.

- `BodyLimitMiddleware` (pure ASGI, wired in app.main): refuses a request body with a
  Content-Encoding (415: the API never decompresses, so no decompression bomb reaches it), and stops
  reading a body as soon as it passes its limit (413 problem+json, `Connection: close` so the server
  reads no more of it). Uploads to POST /v1/datasets may be up to `max_upload_bytes`; every other
  body (JSON) up to MAX_JSON_BODY_BYTES. A declared Content-Length over the limit is refused before
  a byte of the body is read.
- `rate_limit`: a token bucket per tenant (per API process), 429 with `Retry-After`.
- `job_quota`: at most N queued + running jobs per tenant, 429 with `Retry-After`; a retry of an
  already accepted job (same Idempotency-Key) is never refused.
- `check_upload_rate`: at most N dataset uploads and registrations a minute per tenant (a token
  bucket per API process), 429 with `Retry-After`; called by app.datasets.service.
The per-tenant storage quota lives with the datasets (app.datasets.quota).

Every number is a setting (app.core.config, prefix TOV_): `rate_limit_per_second`,
`rate_limit_burst`, `max_active_jobs_per_tenant`, `max_json_body_bytes`, `max_upload_bytes`,
`uploads_per_minute`, `max_stored_bytes_per_tenant`; 0 turns a per-tenant limit off.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import func, select
from starlette.types import Message, Receive, Scope, Send

from app.core.asgi import HttpMiddleware
from app.core.auth import SessionDep, TenantDep
from app.core.config import Settings, get_settings
from app.core.errors import QuotaExceeded, TooManyRequests, problem
from app.core.models import Job, JobStatus

QUOTA_RETRY_AFTER_S = 30
UPLOAD_PATHS = ("/v1/datasets",)


@dataclass(frozen=True)
class Limits:
    rate_per_second: float
    burst: int
    max_active_jobs: int
    max_json_body_bytes: int
    max_upload_bytes: int
    uploads_per_minute: float
    max_stored_bytes: int


def limits_from(settings: Settings) -> Limits:
    """The limits in force: read from the settings on every request, so a test (or an operator
    reloading settings) changes them without rebuilding the app."""
    return Limits(
        rate_per_second=settings.rate_limit_per_second,
        burst=settings.rate_limit_burst,
        max_active_jobs=settings.max_active_jobs_per_tenant,
        max_json_body_bytes=settings.max_json_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        uploads_per_minute=settings.uploads_per_minute,
        max_stored_bytes=settings.max_stored_bytes_per_tenant,
    )


# ---------------------------------------------------------------------------------------------
# Request bodies


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def body_limit_for(scope: Scope, limits: Limits) -> int:
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    is_upload = scope.get("method") == "POST" and scope.get("path") in UPLOAD_PATHS
    if is_upload and content_type != "application/json":
        return limits.max_upload_bytes
    return limits.max_json_body_bytes


class BodyLimitMiddleware(HttpMiddleware):
    """Enforce body limits while the body streams; see the module docstring."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        encoding = (_header(scope, b"content-encoding") or "").strip().lower()
        if encoding not in ("", "identity"):
            await self._refuse(
                scope,
                receive,
                send,
                415,
                "Unsupported media type",
                "unsupported_media_type",
                f"Content-Encoding '{encoding[:40]}' is not accepted: send the body uncompressed "
                "(compressed bodies are refused to rule out decompression bombs).",
            )
            return
        declared = _header(scope, b"content-length")
        if declared is None and _header(scope, b"transfer-encoding") is None:
            await self.app(scope, receive, send)  # no body (HTTP/1.1 framing): nothing to limit
            return
        limit = body_limit_for(scope, limits_from(get_settings()))
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        await self._limited(scope, receive, send, limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Pass the request on, counting its body: past `limit`, answer 413 and stop reading."""
        state = {"received": 0, "over": False, "started": False}

        async def limited_receive() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    if not state["started"]:
                        state["started"] = True
                        await self._too_large(scope, receive, send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # the 413 has been sent; the app's own answer is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
            # The app saw a disconnect (or our 413) while reading: it has been answered.

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        await self._refuse(
            scope,
            receive,
            send,
            413,
            "Payload too large",
            "payload_too_large",
            f"The request body exceeds the limit of {limit} bytes.",
        )

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, title: str, code: str, detail: str
    ) -> None:
        response = problem(
            status,
            title,
            detail,
            code=code,
            instance=scope.get("path"),
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------------
# Request rate


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, at most `burst` saved up. Thread-safe."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def take(self, key: str, *, rate: float, burst: int, now: float | None = None) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.MAX_KEYS:
                self._buckets = {k: v for k, v in self._buckets.items() if k == key}
            return (1.0 - tokens) / rate if rate > 0 else float("inf")

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


buckets = TokenBuckets()


async def rate_limit(tenant: TenantDep) -> None:
    """Dependency: at most `rate_limit_per_second` requests a second per tenant (429 beyond).
    Async: it only takes a lock for a few microseconds, so it runs on the event loop."""
    limits = limits_from(get_settings())
    if limits.rate_per_second <= 0:
        return  # no rate limit
    wait = buckets.take(tenant.id, rate=limits.rate_per_second, burst=max(1, limits.burst))
    if wait > 0:
        retry = max(1, math.ceil(min(wait, 3600)))
        raise TooManyRequests(
            f"Too many requests: at most {limits.rate_per_second:g} a second per tenant, "
            f"{limits.burst} at once (TOV_RATE_LIMIT_PER_SECOND, TOV_RATE_LIMIT_BURST); retry "
            f"in {retry} s.",
            headers={"Retry-After": str(retry)},
        )


upload_buckets = TokenBuckets()


def check_upload_rate(tenant_id: str, settings: Settings) -> None:
    """At most `uploads_per_minute` dataset uploads or registrations per tenant: a bucket that
    holds a minute's worth and refills evenly (429 beyond). Each one is validated (and may be
    copied), so it costs far more than a request: it gets its own, lower limit."""
    per_minute = limits_from(settings).uploads_per_minute
    if per_minute <= 0:
        return
    wait = upload_buckets.take(
        tenant_id, rate=per_minute / 60.0, burst=max(1, math.floor(per_minute))
    )
    if wait > 0:
        retry = max(1, math.ceil(min(wait, 3600)))
        raise TooManyRequests(
            f"Too many uploads: at most {per_minute:g} a minute per tenant "
            f"(TOV_UPLOADS_PER_MINUTE); retry in {retry} s.",
            headers={"Retry-After": str(retry)},
        )


# ---------------------------------------------------------------------------------------------
# Job quota

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)


def job_quota(request: Request, session: SessionDep, tenant: TenantDep) -> None:
    """Dependency of POST /v1/jobs: at most `max_active_jobs_per_tenant` queued + running jobs."""
    limit = limits_from(get_settings()).max_active_jobs
    if limit <= 0:
        return  # no quota
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant.id, Job.status.in_([s.value for s in ACTIVE]))
    )
    if (active or 0) < limit:
        return
    key = request.headers.get("idempotency-key")
    if key and session.scalar(
        select(Job.id).where(Job.tenant_id == tenant.id, Job.idempotency_key == key)
    ):
        return  # a retry of an accepted job gets its job back, as without the quota
    raise QuotaExceeded(
        f"Quota reached: {active} jobs are queued or running; at most {limit} per tenant "
        "(TOV_MAX_ACTIVE_JOBS_PER_TENANT). Retry "
        "when some have finished, or cancel some.",
        headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
    )


RateLimited = Annotated[None, Depends(rate_limit)]
JobQuota = Annotated[None, Depends(job_quota)]
