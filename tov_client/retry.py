"""Retrying requests: 429 and 503 honour ``Retry-After`` (seconds or an HTTP date), bounded."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from tov_client.errors import ApiError, TransportError

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before giving up.

    ``max_retries`` extra attempts after the first; each wait is the server's ``Retry-After``
    when given, else an exponential backoff from ``backoff`` seconds; no single wait exceeds
    ``max_wait`` seconds. Connection failures (the request never reached the server) are
    retried the same way.
    """

    max_retries: int = 5
    backoff: float = 0.5
    max_wait: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        advised = parse_retry_after(response.headers.get("retry-after")) if response else None
        wait = advised if advised is not None else self.backoff * (2**attempt)
        return max(0.0, min(wait, self.max_wait))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a delay (``"3"``) or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# Failures after the request may have reached the server (no answer in time, a dropped
# connection): retried only where a repeat cannot do the work twice.
MAYBE_DELIVERED = (httpx.TimeoutException, httpx.ReadError, httpx.RemoteProtocolError)


def send_with_retries(
    http: httpx.Client,
    build: Callable[[], httpx.Request],
    policy: RetryPolicy,
    *,
    stream: bool = False,
    idempotent: bool = False,
) -> httpx.Response:
    """Send ``build()`` (rebuilt each attempt, so streamed bodies start over) and return a
    successful response; raise ``ApiError`` for an error status and ``TransportError`` when
    the server cannot be reached. With ``stream=True`` the caller must close the response.
    ``idempotent`` requests (reads, or a create with an ``Idempotency-Key``) are also retried
    when the server may have got them but gave no answer in time."""
    attempt = 0
    while True:
        try:
            response = http.send(build(), stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if attempt >= policy.max_retries:
                raise TransportError(f"cannot reach {http.base_url}: {exc}") from exc
            policy.sleep(policy.delay(attempt, None))
            attempt += 1
            continue
        except MAYBE_DELIVERED as exc:
            if not idempotent or attempt >= policy.max_retries:
                raise TransportError(
                    f"no answer from {http.base_url} ({type(exc).__name__}: {exc}); "
                    "the server may have acted on the request",
                    maybe_delivered=True,
                ) from exc
            policy.sleep(policy.delay(attempt, None))
            attempt += 1
            continue
        except httpx.TransportError as exc:
            raise TransportError(f"request to {http.base_url} failed: {exc}") from exc
        if response.status_code in RETRY_STATUSES and attempt < policy.max_retries:
            response.read()
            response.close()
            policy.sleep(policy.delay(attempt, response))
            attempt += 1
            continue
        if response.is_error:
            response.read()
            response.close()
            raise ApiError.from_response(response)
        return response
