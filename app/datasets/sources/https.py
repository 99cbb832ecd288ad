"""`https://` dataset references, under the SSRF rules of `network` plus these:

2. The scheme is `https`. `gs://`, `az://` ... are refused with "not configured"; anything else
   as not allowed (`s3://` and `hf://` have their own sources).
3. The host is on the allow-list `Settings.remote_hosts` (exact names, `*.example.com` for
   sub-domains, or `*` for any host). An empty list refuses every host. No credentials.
5. The connection goes to the address resolved once (rule 4; no second resolution, so DNS
   rebinding cannot swap it); TLS verifies the certificate for the host name.
6. Redirects are not followed (a 3xx is an error naming the target); only 200 is accepted; no
   Content-Encoding is accepted (we ask for identity); the body is capped at `max_upload_bytes`
   (Content-Length checked first, then the bytes counted) and the whole exchange at
   TOTAL_TIMEOUT_S (a watchdog closes the socket, so a slow trickle cannot hold it open).
The file lands in the artifact store's `incoming` folder; the caller validates it like an upload.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.core.config import Settings
from app.core.errors import PayloadTooLarge, UnsupportedMediaType
from app.core.storage import new_temp
from app.datasets.sources.network import (
    CONNECT_TIMEOUT_S,
    TOTAL_TIMEOUT_S,
    Fetched,
    RemoteRefused,
    check_host_syntax,
    check_plain,
    not_configured,
    resolve_once,
    shown,
)

CHUNK_BYTES = 1 << 16
REMOTE_SCHEMES = ("https",)
UNCONFIGURED_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "hf", "hdfs", "webhdfs")


@dataclass(frozen=True)
class Target:
    uri: str
    host: str  # lower case, no trailing dot
    port: int
    path: str  # path and query, as sent


def parse_remote(uri: str, allowed_hosts: list[str]) -> Target:
    """Rules 1-3; RemoteRefused says which one failed."""
    check_plain(uri)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise RemoteRefused(f"'{shown(uri)}' is not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme in UNCONFIGURED_SCHEMES:
        raise not_configured(scheme)
    if scheme not in REMOTE_SCHEMES:
        raise RemoteRefused(
            f"The scheme '{scheme[:20]}' is not allowed for remote datasets; use https://."
        )
    if "@" in parts.netloc or parts.username or parts.password:
        raise RemoteRefused("Credentials in the URL are not allowed.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise RemoteRefused(f"'{shown(uri)}' names no host.")
    check_host_syntax(host)
    if not host_allowed(host, allowed_hosts):
        raise RemoteRefused(
            f"The host '{host}' is not on the allow-list of remote hosts (TOV_REMOTE_HOSTS)"
            + ("; remote references are disabled on this deployment." if not allowed_hosts else ".")
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(uri=uri, host=host, port=port or 443, path=path)


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    """Whether `host` is on the allow-list (exact, `*.domain` for sub-domains, or `*`)."""
    for entry in allowed_hosts:
        entry = entry.strip().lower().rstrip(".")
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
    return False


def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _open_socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to the already-checked address (never a host name)."""
    return socket.create_connection((address, port), timeout=timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address: the name is used for SNI, the certificate and Host only."""

    def __init__(self, target: Target, address: str, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=CONNECT_TIMEOUT_S, context=context)
        self._address = address
        self._tls = context
        self.raw: socket.socket | None = None  # for the watchdog, also during the handshake

    def connect(self) -> None:
        raw = self.raw = _open_socket(self._address, self.port, CONNECT_TIMEOUT_S)
        try:
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def fetch_https(uri: str, *, settings: Settings, tenant: str = "") -> Fetched:
    """Download a remote dataset into the artifact store under all the rules above. The hosts
    are public and the same for every tenant, so `tenant` plays no part."""
    target = parse_remote(uri, settings.remote_hosts)
    address = resolve_once(target.host, target.port)
    connection = _PinnedHTTPSConnection(target, address, _ssl_context())
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    expired = threading.Event()

    def _expire() -> None:
        expired.set()
        sock = connection.raw
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(TOTAL_TIMEOUT_S, _expire)
    watchdog.daemon = True
    watchdog.start()
    root, limit = settings.artifact_root, settings.max_upload_bytes
    try:
        return _exchange(connection, target, root=root, limit=limit, deadline=deadline)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        # The socket's own timeout can fire a moment before the watchdog at the same deadline.
        if expired.is_set() or time.monotonic() >= deadline - 0.25:
            raise RemoteRefused(
                f"Downloading '{shown(uri)}' took longer than {TOTAL_TIMEOUT_S:g} s."
            ) from None
        raise RemoteRefused(
            f"Downloading '{shown(uri)}' failed: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    finally:
        watchdog.cancel()
        connection.close()


def _exchange(
    connection: _PinnedHTTPSConnection, target: Target, *, root: Path, limit: int, deadline: float
) -> Fetched:
    connection.request(
        "GET",
        target.path,
        headers={"Accept-Encoding": "identity", "User-Agent": "tov-select", "Connection": "close"},
    )
    response = connection.getresponse()
    _check_response(response, target, limit)
    path = _receive(connection, response, target, root=root, limit=limit, deadline=deadline)
    name = target.path.split("?", 1)[0].rsplit("/", 1)[-1] or "remote"
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    return Fetched(path=path, name=name[:300], content_type=content_type)


def _check_response(response: http.client.HTTPResponse, target: Target, limit: int) -> None:
    """Rule 6 on the status line and headers: 200, identity encoding, a size within `limit`."""
    if 300 <= response.status < 400:
        location = (response.getheader("Location") or "")[:200]
        raise RemoteRefused(
            f"'{shown(target.uri)}' answered {response.status} (a redirect to '{location}'); "
            "redirects are not followed: register the final URL."
        )
    if response.status != 200:
        raise RemoteRefused(f"'{shown(target.uri)}' answered HTTP {response.status}.")
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"'{shown(target.uri)}' was sent with Content-Encoding '{encoding[:40]}'; compressed "
            "downloads are refused."
        )
    declared = response.getheader("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"'{shown(target.uri)}' is {declared} bytes; the limit is {limit}.")


def _receive(
    connection: _PinnedHTTPSConnection,
    response: http.client.HTTPResponse,
    target: Target,
    *,
    root: Path,
    limit: int,
    deadline: float,
) -> Path:
    """Stream the body into a new temporary file, counting bytes and watching the deadline."""
    fd, path = new_temp(root)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the download deadline passed")
                if connection.sock is not None:
                    connection.sock.settimeout(min(remaining, CONNECT_TIMEOUT_S))
                chunk = response.read1(CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"'{shown(target.uri)}' is larger than the limit of {limit} bytes."
                    )
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
