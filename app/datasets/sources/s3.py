"""`s3://BUCKET/KEY` dataset references through fsspec/s3fs, under the SSRF rules of `network`.

- The URI is plain (rule 1). `s3://` is refused as not configured unless `s3_buckets`,
  `s3_prefixes` or `s3_shared_prefixes` is set. The object must lie under a prefix the tenant may
  read (app.datasets.sources.tenancy: `s3://BUCKET/NAME/` for a listed bucket, a `{tenant}`
  template, or a shared prefix); the key is taken literally and once percent-decoded: no empty,
  `.` or `..` segments (an HTTP client would fold `allowed/../other` into another bucket or
  prefix), no `?` or `#`, at most MAX_KEY_CHARS characters (parsed in `s3_refs`).
- Users name buckets and keys, never hosts. The endpoint is the operator's (`s3_endpoint_url`, or
  AWS), addressed path-style so a bucket never becomes part of a host name. The endpoint's host
  must be a DNS name or a canonical IP literal whose every address is public (rule 4),
  unless the operator opted in with `s3_allow_private_endpoint` (MinIO on a private network).
  The check runs before each fetch and again in the HTTP client's resolver at every connection,
  so DNS rebinding cannot swap in an internal address later; a redirect to another host is
  checked the same way.
- The object's size (HEAD) is checked against the limit before a byte is read; one streamed GET
  then counts the bytes and stops past the limit; the whole copy is capped at TOTAL_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.core.config import Settings
from app.core.errors import PayloadTooLarge
from app.core.storage import new_temp
from app.datasets.sources.network import (
    CONNECT_TIMEOUT_S,
    TOTAL_TIMEOUT_S,
    Fetched,
    RemoteRefused,
    address_refusal,
    check_host_syntax,
    check_plain,
    not_configured,
    resolve_once,
    shown,
)
from app.datasets.sources.s3_refs import S3Ref, parse_s3
from app.datasets.sources.tenancy import s3_prefixes_for

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    url: str | None  # None: AWS, chosen by botocore from the region
    trusted_host: str | None  # a private endpoint host the operator allowed


def check_endpoint(settings: Settings) -> Endpoint:
    """The operator's endpoint under rules 3-4 of `network` (syntax, public addresses)."""
    url = settings.s3_endpoint_url
    if not url:
        return Endpoint(url=None, trusted_host=None)
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _endpoint_refused("is not a valid URL") from None
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise _endpoint_refused("must be an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise _endpoint_refused("must carry no credentials, path or query")
    try:
        check_host_syntax(host)
    except RemoteRefused as exc:
        raise _endpoint_refused(f"has an invalid host: {exc.detail}") from None
    if settings.s3_allow_private_endpoint:
        return Endpoint(url=url, trusted_host=host)
    try:
        resolve_once(host, port)
    except RemoteRefused as exc:
        logger.warning("s3 endpoint refused: %s", exc.detail)
        raise _endpoint_refused(
            "does not resolve to public addresses only (server-side request forgery "
            "protection); an operator may allow a private endpoint with "
            "TOV_S3_ALLOW_PRIVATE_ENDPOINT=true"
        ) from None
    return Endpoint(url=url, trusted_host=None)


def _endpoint_refused(reason: str) -> RemoteRefused:
    return RemoteRefused(f"s3:// references are unavailable: the configured S3 endpoint {reason}.")


class CheckedResolver:
    """An aiohttp resolver that refuses non-public addresses at every connection (rule 4),
    except for the one endpoint host the operator trusted. Mixed into aiohttp's
    AbstractResolver by `_resolver`, so aiohttp is imported only when s3:// is used."""

    def __init__(self, trusted_host: str | None) -> None:
        self.trusted_host = trusted_host

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        from aiohttp.resolver import ThreadedResolver

        results = await ThreadedResolver(asyncio.get_running_loop()).resolve(host, port, family)
        if host.rstrip(".").lower() != self.trusted_host:
            for result in results:
                reason = address_refusal(result["host"])
                if reason:
                    raise OSError(f"'{host}' resolves to {result['host']}, {reason}: refused")
        return results

    async def close(self) -> None:
        return None


@functools.cache
def _resolver_class() -> type[CheckedResolver]:
    from aiohttp.abc import AbstractResolver

    return type("AiohttpCheckedResolver", (CheckedResolver, AbstractResolver), {})


def _resolver(trusted_host: str | None) -> CheckedResolver:
    return _resolver_class()(trusted_host)


_filesystems: dict[tuple[Any, ...], Any] = {}
_filesystems_lock = threading.Lock()


def _filesystem(settings: Settings, endpoint: Endpoint) -> Any:
    """One s3fs filesystem per configuration (its HTTP session is reused across fetches)."""
    secret = settings.s3_secret_access_key
    key = (
        endpoint.url,
        endpoint.trusted_host,
        settings.s3_region,
        settings.s3_access_key_id,
        secret.get_secret_value() if secret else None,
        settings.s3_anonymous,
    )
    with _filesystems_lock:
        if key not in _filesystems:
            _filesystems[key] = _new_filesystem(settings, endpoint)
        return _filesystems[key]


def _new_filesystem(settings: Settings, endpoint: Endpoint) -> Any:
    try:
        import s3fs
    except ImportError:
        raise RemoteRefused(
            "s3:// references are not configured on this deployment (s3fs is not installed)."
        ) from None
    secret = settings.s3_secret_access_key
    client_kwargs: dict[str, Any] = {}
    if settings.s3_region:
        client_kwargs["region_name"] = settings.s3_region
    return s3fs.S3FileSystem(
        anon=settings.s3_anonymous,
        endpoint_url=endpoint.url,
        key=settings.s3_access_key_id,
        secret=secret.get_secret_value() if secret else None,
        client_kwargs=client_kwargs,
        config_kwargs={
            "connector_args": {"resolver": _resolver(endpoint.trusted_host)},
            "s3": {"addressing_style": "path"},
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "retries": {"max_attempts": 2, "mode": "standard"},
        },
        use_listings_cache=False,
        skip_instance_cache=True,
    )


def fetch_s3(uri: str, *, settings: Settings, tenant: str) -> Fetched:
    """Copy one S3 object `tenant` may read into the artifact store's `incoming` folder
    (size-limited, streamed)."""
    check_plain(uri)
    if not (settings.s3_buckets or settings.s3_prefixes or settings.s3_shared_prefixes):
        raise not_configured("s3")
    from fsspec.asyn import sync

    root, limit = settings.artifact_root, settings.max_upload_bytes
    own, shared = s3_prefixes_for(settings, tenant)
    ref = parse_s3(uri, own, shared, tenant)
    endpoint = check_endpoint(settings)
    fs = _filesystem(settings, endpoint)
    fd, path = new_temp(root)
    try:
        with os.fdopen(fd, "wb") as out:
            sync(fs.loop, _copy, fs, ref, out, limit, timeout=TOTAL_TIMEOUT_S + 5)
    except BaseException as exc:
        path.unlink(missing_ok=True)
        raise _translated(exc, ref) from None
    return Fetched(path=path, name=ref.key.rsplit("/", 1)[-1][:300], content_type="")


async def _copy(fs: Any, ref: S3Ref, out: Any, limit: int) -> None:
    await asyncio.wait_for(_copy_unbounded(fs, ref, out, limit), TOTAL_TIMEOUT_S)


async def _copy_unbounded(fs: Any, ref: S3Ref, out: Any, limit: int) -> None:
    try:
        info = await fs._info(ref.path)
    except FileNotFoundError:
        bucket_exists = await fs._exists(ref.bucket)
        raise RemoteRefused(
            f"'{shown(ref.uri)}' does not exist: "
            + (
                f"bucket '{ref.bucket}' has no object with the key '{ref.key[:200]}'."
                if bucket_exists
                else f"the bucket '{ref.bucket}' does not exist or cannot be read."
            )
        ) from None
    if info.get("type") != "file":
        raise RemoteRefused(f"'{shown(ref.uri)}' is a folder (a key prefix); name one object.")
    size = int(info.get("size") or 0)
    if size > limit:
        raise PayloadTooLarge(f"'{shown(ref.uri)}' is {size} bytes; the limit is {limit}.")
    # One GET, pinned to what the HEAD saw: an object replaced in between fails the precondition.
    response = await fs._call_s3("get_object", Bucket=ref.bucket, Key=ref.key, **_same_object(info))
    async with response["Body"] as body:
        copied = 0
        while chunk := await body.read(CHUNK_BYTES):
            copied += len(chunk)
            if copied > limit:  # more bytes than announced
                raise PayloadTooLarge(
                    f"'{shown(ref.uri)}' is larger than the limit of {limit} bytes."
                )
            out.write(chunk)


def _same_object(info: dict[str, Any]) -> dict[str, str]:
    etag = info.get("ETag") or info.get("etag")
    return {"IfMatch": str(etag)} if etag else {}


def _translated(exc: BaseException, ref: S3Ref) -> BaseException:
    """The API error for what went wrong while copying (app errors pass through)."""
    from fsspec.exceptions import FSTimeoutError

    if isinstance(exc, RemoteRefused | PayloadTooLarge):
        return exc
    if isinstance(exc, FSTimeoutError | asyncio.TimeoutError | TimeoutError):
        return RemoteRefused(f"Reading '{shown(ref.uri)}' took longer than {TOTAL_TIMEOUT_S:g} s.")
    if isinstance(exc, PermissionError):
        return RemoteRefused(f"Access to '{shown(ref.uri)}' was denied by the S3 service.")
    if isinstance(exc, FileNotFoundError):
        return RemoteRefused(f"'{shown(ref.uri)}' does not exist.")
    if isinstance(exc, OSError) and "pre-conditions" in str(exc):
        return RemoteRefused(f"'{shown(ref.uri)}' changed while it was read; register it again.")
    if isinstance(exc, Exception):
        logger.warning("s3 read of %s failed: %s: %s", ref.uri, type(exc).__name__, exc)
        if "ConnectionError" in type(exc).__name__ or isinstance(exc, ConnectionError):
            # The endpoint's address stays in the log: it is the operator's, not the user's.
            return RemoteRefused(
                f"Reading '{shown(ref.uri)}' failed: the S3 endpoint could not be reached "
                "(or only through an address refused by server-side request forgery protection)."
            )
        return RemoteRefused(
            f"Reading '{shown(ref.uri)}' failed: {type(exc).__name__}: {str(exc)[:200]}"
        )
    return exc  # KeyboardInterrupt, SystemExit: as they are
