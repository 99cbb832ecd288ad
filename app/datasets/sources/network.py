"""Network safety shared by the remote sources (OWASP API7, server-side request forgery).

Rule 1 (every scheme): the URI is plain: ASCII, no whitespace, control characters, backslashes;
at most MAX_URI_CHARS characters. Rule 3: a host is a DNS name or a canonical IP literal (no
decimal/octal/hex spellings such as `2130706433` or `0x7f.1`). Rule 4: a host is resolved once;
every address it resolves to must be public: loopback, private, link-local, multicast, reserved,
unspecified, shared (CGNAT) and site-local addresses are refused, and so are IPv6 addresses that
embed an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo). Rule 2 (schemes) and the
rest live with each source (`https`, `s3`, `hf`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import InvalidInput

MAX_URI_CHARS = 2048
RESOLVE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
TOTAL_TIMEOUT_S = 120.0
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # what inet_aton may read as a number

# IPv6 ranges that carry an IPv4 address inside them: they could reach an internal IPv4 host.
EMBEDDING_V6 = tuple(
    ipaddress.ip_network(n)
    for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32")
)
SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")
SETTING_FOR_SCHEME = {"s3": "TOV_S3_BUCKETS", "hf": "TOV_HF_CACHE"}


class RemoteRefused(InvalidInput):
    """A remote reference this deployment will not fetch (422)."""


@dataclass(frozen=True)
class Fetched:
    """A dataset file a source made available for validation."""

    path: Path
    name: str  # the last path segment, for the file format and the dataset's default name
    content_type: str  # as the server sent it ("" when none)
    in_place: bool = False  # True: a server-side file the dataset refers to (not copied)


def shown(uri: str) -> str:
    """A URI cut to 200 characters for messages."""
    return uri if len(uri) <= 200 else uri[:200] + "..."


def check_plain(uri: str) -> None:
    """Rule 1, for every scheme."""
    if len(uri) > MAX_URI_CHARS:
        raise RemoteRefused(f"The URI is longer than {MAX_URI_CHARS} characters.")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in uri):
        raise RemoteRefused("The URI contains whitespace, control characters or backslashes.")
    if not uri.isascii():
        raise RemoteRefused("The URI must be ASCII (percent-encode the path; punycode the host).")


def not_configured(scheme: str) -> RemoteRefused:
    """The refusal for a scheme this deployment did not set up."""
    setting = SETTING_FOR_SCHEME.get(scheme)
    how = f"{setting} is not set" if setting else f"no {scheme} filesystem is installed"
    return RemoteRefused(
        f"{scheme}:// references are not configured on this deployment ({how}); upload the "
        "file or use a reference this deployment accepts."
    )


def check_host_syntax(host: str) -> None:
    """Rule 3's syntax: a canonical IP literal or a valid DNS name."""
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
