"""Errors raised by the client: the server's RFC 9457 problem details, kept whole."""

from __future__ import annotations

from typing import Any

import httpx


class TovError(Exception):
    """Base class of everything the client raises on purpose."""


class ApiError(TovError):
    """The API answered with an error status; carries its problem details.

    Attributes mirror the problem document: ``status``, ``title``, ``detail``, ``code``, ``type``,
    ``instance`` and ``errors`` (for a bad dataset, a list of ``{file, line, field, reason}``).
    ``problem`` is the whole parsed body (or ``{}`` when the body was not JSON). ``code`` is one
    of the API's stable error codes (README "Error codes": ``invalid_input``, ``not_found``,
    ``conflict``, ``too_many_requests``, ...), the field to branch on; None from a proxy's page.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        code: str | None = None,
        type: str | None = None,
        instance: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        problem: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.type = type
        self.instance = instance
        self.errors = errors or []
        self.problem = problem or {}
        self.headers = headers or {}

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Build from a (read) error response; tolerates non-JSON bodies from proxies."""
        body: dict[str, Any] = {}
        try:
            parsed = response.json()
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        title = str(body.get("title") or response.reason_phrase or "HTTP error")
        detail = body.get("detail")
        if detail is None:
            detail = response.text[:500] if not body else title
        errors = body.get("errors")
        return cls(
            response.status_code,
            title,
            str(detail),
            code=body.get("code"),
            type=body.get("type"),
            instance=body.get("instance"),
            errors=errors if isinstance(errors, list) else None,
            problem=body,
            headers=dict(response.headers),
        )

    def to_dict(self) -> dict[str, Any]:
        """The problem details as a plain dict (what the CLI prints with ``--json``)."""
        out: dict[str, Any] = dict(self.problem)
        out.update(status=self.status, title=self.title, detail=self.detail)
        if self.errors:
            out["errors"] = self.errors
        return out


class TransportError(TovError):
    """The API could not be reached (connection refused, timeout) after the allowed retries.

    ``maybe_delivered``: the request may have reached the server (it gave no answer in time);
    ``idempotency_key``: for a create, the key that makes a retry by hand safe.
    """

    def __init__(
        self, message: str, *, maybe_delivered: bool = False, idempotency_key: str | None = None
    ) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered
        self.idempotency_key = idempotency_key


class JobFailed(TovError):
    """A waited-for job ended failed or cancelled; ``job`` holds its last state."""

    def __init__(self, job: Any) -> None:
        error = getattr(job, "error", None)
        reason = f": {error.detail}" if error is not None and error.detail else ""
        super().__init__(f"job {job.id} {job.status}{reason}")
        self.job = job


class WaitTimeout(TovError):
    """A job did not finish within the time given to ``wait``; ``job`` holds its last state."""

    def __init__(self, job: Any, timeout: float) -> None:
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s")
        self.job = job
