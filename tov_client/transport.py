"""The HTTP plumbing every part of ``Client`` shares: base URL, API key, retries, one request.

The request helpers for datasets, jobs, results and models (``tov_client.datasets``, ``.jobs``,
``.downloads``, ``.catalog``) build on ``Transport`` so each role reads on its own; ``Client``
combines them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Self

import httpx

from tov_client.models import Dataset
from tov_client.retry import RetryPolicy, send_with_retries

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK_BYTES = 1 << 20
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})  # safe to send twice
ByteProgress = Callable[[int, int | None], None]
"""Called as ``fn(bytes_done, bytes_total_or_None)`` while a file moves."""


def ref(value: str | Dataset) -> str:
    """A dataset reference as the API takes it: a ``Dataset``'s id, or the string itself."""
    return value.id if isinstance(value, Dataset) else str(value)


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """The items whose value is set: the API then applies its own defaults to the rest."""
    return {k: v for k, v in values.items() if v is not None}


class Transport:
    """One deployment's connection: ``base_url`` and ``api_key`` (default ``TOV_API_URL`` and
    ``TOV_API_KEY``), a retry policy, and the ``httpx.Client`` that carries the requests."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("TOV_API_KEY")
        self.retry = retry or RetryPolicy()
        self._owns_http = http_client is None
        if http_client is None:
            url = base_url or os.environ.get("TOV_API_URL") or DEFAULT_URL
            http_client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self._http = http_client
        self.base_url = str(self._http.base_url).rstrip("/")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            self._http.close()

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        content: Callable[[], Any] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send one request with the policy's retries. Only requests that are safe to send twice
        are retried after a timeout: idempotent methods, and POSTs with an Idempotency-Key.
        ``content`` is a factory so that each retry streams the body afresh."""

        def build() -> httpx.Request:
            return self._http.build_request(
                method,
                path,
                params=params,
                json=json,
                headers=self._headers(headers),
                content=content() if content is not None else None,
            )

        idempotent = method in IDEMPOTENT_METHODS or "Idempotency-Key" in (headers or {})
        return send_with_retries(
            self._http, build, self.retry, stream=stream, idempotent=idempotent
        )
