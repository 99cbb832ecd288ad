"""Remote dataset references: `https://`, `s3://` and `hf://`, under SSRF rules (OWASP API7).

`fetch_reference` dispatches on the scheme; `s3://` lives in app/remote_s3.py and `hf://` in
app/remote_hf.py, both reusing rules 1 and 4 below. The rules for `https://`, in order:
1. The URI is plain: ASCII, no whitespace, control characters, backslashes or credentials; at most
   MAX_URI_CHARS characters.
2. The scheme is `https` (or `s3`/`hf` where configured). `gs://`, `az://` ... and `s3://`/`hf://`
   on a deployment that did not configure them are refused with "not configured"; anything else
   is refused as not allowed.
3. The host is a DNS name or a canonical IP literal (no decimal/octal/hex spellings such as
   `2130706433` or `0x7f.1`), and it is on the allow-list `Settings.remote_hosts` (exact names,
   `*.example.com` for sub-domains, or `*` for any host). An empty list refuses every host.
4. The host is resolved once. Every address it resolves to must be public: loopback, private,
   link-local, multicast, reserved, unspecified, shared (CGNAT) and site-local addresses are
   refused, and so are IPv6 addresses that embed an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64,
   6to4, Teredo).
5. The connection goes to the address resolved in 4 (no second resolution, so DNS rebinding cannot
   swap it); TLS verifies the certificate for the host name.
6. Redirects are not followed (a 3xx is an error naming the target); only 200 is accepted; no
   Content-Encoding is accepted (we ask for identity); the body is capped at `max_upload_bytes`
   (Content-Length checked first, then the bytes counted) and the whole exchange at
   TOTAL_TIMEOUT_S (a watchdog closes the socket, so a slow trickle cannot hold it open).
The file lands in the artifact store's `incoming` folder; the caller validates it like an upload.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.core.config import Settings
from app.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.core.storage import new_temp

MAX_URI_CHARS = 2048
RESOLVE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
TOTAL_TIMEOUT_S = 120.0
CHUNK_BYTES = 1 << 16
REMOTE_SCHEMES = ("https",)
UNCONFIGURED_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "hf", "hdfs", "webhdfs")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # what inet_aton may read as a number

# IPv6 ranges that carry an IPv4 address inside them: they could reach an internal IPv4 host.
EMBEDDING_V6 = tuple(
    ipaddress.ip_network(n)
    for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32")
)
SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")


class RemoteRefused(InvalidInput):
    """A remote reference this deployment will not fetch (422)."""


def is_remote(uri: str) -> bool:
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    return scheme not in ("", "file") and "://" in uri[:20]


@dataclass(frozen=True)
class Target:
    uri: str
    host: str  # lower case, no trailing dot
    port: int
    path: str  # path and query, as sent


def _shown(uri: str) -> str:
    return uri if len(uri) <= 200 else uri[:200] + "..."


def check_plain(uri: str) -> None:
    """Rule 1, for every scheme."""
    if len(uri) > MAX_URI_CHARS:
        raise RemoteRefused(f"The URI is longer than {MAX_URI_CHARS} characters.")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in uri):
        raise RemoteRefused("The URI contains whitespace, control characters or backslashes.")
    if not uri.isascii():
        raise RemoteRefused("The URI must be ASCII (percent-encode the path; punycode the host).")


SETTING_FOR_SCHEME = {"s3": "TOV_S3_BUCKETS", "hf": "TOV_HF_CACHE"}


def not_configured(scheme: str) -> RemoteRefused:
    setting = SETTING_FOR_SCHEME.get(scheme)
    how = f"{setting} is not set" if setting else f"no {scheme} filesystem is installed"
    return RemoteRefused(
        f"{scheme}:// references are not configured on this deployment ({how}); upload the "
        "file or use a reference this deployment accepts."
    )


def fetch_reference(uri: str, *, settings: Settings) -> Downloaded:
    """Copy a remote reference into the artifact store (`incoming`) under its scheme's rules."""
    scheme = uri.split(":", 1)[0].lower()
    limit, root = settings.max_upload_bytes, settings.artifact_root
    if scheme == "s3":
        check_plain(uri)
        if not settings.s3_buckets:
            raise not_configured("s3")
        from app.remote_s3 import fetch_s3_to_temp

        return fetch_s3_to_temp(uri, root=root, limit=limit, settings=settings)
    if scheme == "hf":
        check_plain(uri)
        if settings.hf_cache is None:
            raise not_configured("hf")
        from app.remote_hf import fetch_hf_to_temp

        return fetch_hf_to_temp(uri, root=root, limit=limit, cache=settings.hf_cache)
    return fetch_to_temp(uri, root=root, limit=limit, allowed_hosts=settings.remote_hosts)


def parse_remote(uri: str, allowed_hosts: list[str]) -> Target:
    """Rules 1-3 of the module docstring; RemoteRefused says which one failed."""
    check_plain(uri)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise RemoteRefused(f"'{_shown(uri)}' is not a valid URL: {exc}.") from None
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
        raise RemoteRefused(f"'{_shown(uri)}' names no host.")
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


def check_host_syntax(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return  # a canonical literal (IPv6 came without its brackets)
    except ValueError:
        pass
    if all(_NUMERIC_PART.match(part) for part in host.split(".")):
        # e.g. 2130706433, 0x7f000001, 0177.0.0.1, 127.1: resolvers read these as addresses.
        raise RemoteRefused(f"'{host}' is not a canonical IP address or a DNS name.")
    if "%" in host or len(host) > 253 or not all(_DNS_LABEL.match(x) for x in host.split(".")):
        raise RemoteRefused(f"'{host[:100]}' is not a valid host name.")


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    for entry in allowed_hosts:
        entry = entry.strip().lower().rstrip(".")
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
    return False


def address_refusal(address: str) -> str | None:
    """Why connecting to `address` is refused (rule 4), or None when it is a public address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if any(ip in net for net in EMBEDDING_V6) and not ip.is_loopback and not ip.is_unspecified:
            return "an IPv6 address that embeds an IPv4 address"
        if ip.is_site_local:
            return "a site-local address"
    checks = (
        ("is_loopback", "a loopback address"),
        ("is_unspecified", "the unspecified address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    )
    for attribute, reason in checks:
        if getattr(ip, attribute):
            return reason
    if isinstance(ip, ipaddress.IPv4Address) and ip in SHARED_V4:
        return "a shared (carrier-grade NAT) address"
    if not ip.is_global:
        return "not a public address"
    return None


_resolver_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tov-resolve")


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def resolve_once(host: str, port: int) -> str:
    """Rule 4: resolve once; every address must be public; returns the one to connect to."""
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        future = _resolver_pool.submit(_getaddrinfo, host, port)
        try:
            addresses = future.result(timeout=RESOLVE_TIMEOUT_S)
        except FutureTimeout:
            raise RemoteRefused(
                f"Resolving '{host}' took longer than {RESOLVE_TIMEOUT_S} s."
            ) from None
        except OSError as exc:
            raise RemoteRefused(f"'{host}' could not be resolved ({exc}).") from None
    if not addresses:
        raise RemoteRefused(f"'{host}' resolves to no address.")
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise RemoteRefused(
                f"'{host}' resolves to {address}, {reason}: refused (server-side request forgery "
                "protection)."
            )
    return addresses[0]


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


@dataclass(frozen=True)
class Downloaded:
    path: Path
    name: str  # the last path segment, for the file format and the dataset's default name
    content_type: str


def fetch_to_temp(uri: str, *, root: Path, limit: int, allowed_hosts: list[str]) -> Downloaded:
    """Download a remote dataset into the artifact store under all the rules above."""
    target = parse_remote(uri, allowed_hosts)
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
    try:
        return _exchange(connection, target, root=root, limit=limit, deadline=deadline)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        # The socket's own timeout can fire a moment before the watchdog at the same deadline.
        if expired.is_set() or time.monotonic() >= deadline - 0.25:
            raise RemoteRefused(
                f"Downloading '{_shown(uri)}' took longer than {TOTAL_TIMEOUT_S:g} s."
            ) from None
        raise RemoteRefused(
            f"Downloading '{_shown(uri)}' failed: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    finally:
        watchdog.cancel()
        connection.close()


def _exchange(
    connection: _PinnedHTTPSConnection, target: Target, *, root: Path, limit: int, deadline: float
) -> Downloaded:
    connection.request(
        "GET",
        target.path,
        headers={"Accept-Encoding": "identity", "User-Agent": "tov-select", "Connection": "close"},
    )
    response = connection.getresponse()
    if 300 <= response.status < 400:
        location = (response.getheader("Location") or "")[:200]
        raise RemoteRefused(
            f"'{_shown(target.uri)}' answered {response.status} (a redirect to '{location}'); "
            "redirects are not followed: register the final URL."
        )
    if response.status != 200:
        raise RemoteRefused(f"'{_shown(target.uri)}' answered HTTP {response.status}.")
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"'{_shown(target.uri)}' was sent with Content-Encoding '{encoding[:40]}'; compressed "
            "downloads are refused."
        )
    declared = response.getheader("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"'{_shown(target.uri)}' is {declared} bytes; the limit is {limit}.")
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
                        f"'{_shown(target.uri)}' is larger than the limit of {limit} bytes."
                    )
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    name = target.path.split("?", 1)[0].rsplit("/", 1)[-1] or "remote"
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    return Downloaded(path=path, name=name[:300], content_type=content_type)
