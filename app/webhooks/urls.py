"""Which receiver URLs a webhook may name: the SSRF rules of `https://` references
(app/datasets/sources/network.py), checked when the endpoint is registered and again, resolved
once and pinned, at every delivery (a name that later resolves to a private address is refused).

1. The URL is plain (ASCII, no whitespace or control characters, at most 2048 characters) and
   carries no credentials.
2. The scheme is `https` (`http` only with TOV_WEBHOOK_ALLOW_INSECURE).
3. The host is a DNS name or a canonical IP literal, on the allow-list TOV_WEBHOOK_HOSTS
   (default `*`: any host).
4. Every address it resolves to is public (no loopback, private, link-local ... unless
   TOV_WEBHOOK_ALLOW_INSECURE).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.core.config import Settings
from app.datasets.sources.https import host_allowed
from app.datasets.sources.network import (
    RemoteRefused,
    check_host_syntax,
    check_plain,
    resolve_once,
    shown,
)


class WebhookUrlRefused(RemoteRefused):
    """A receiver URL this deployment will not send to (422)."""


@dataclass(frozen=True)
class Receiver:
    url: str
    scheme: str  # https, or http where insecure receivers are allowed
    host: str  # lower case, no trailing dot
    port: int
    path: str  # path and query, as sent


def parse_receiver(url: str, settings: Settings, *, field: str = "url") -> Receiver:
    """Rules 1-3 (no DNS): the checks at registration time. The error names `field`."""
    try:
        check_plain(url)
    except RemoteRefused as exc:
        raise WebhookUrlRefused(f"{field}: {exc.detail}") from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefused(f"{field}: '{shown(url)}' is not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if settings.webhook_allow_insecure else ("https",)
    if scheme not in allowed:
        raise WebhookUrlRefused(
            f"{field}: the scheme '{scheme[:20]}' is not allowed for webhooks; use https://"
            + (" (http:// needs TOV_WEBHOOK_ALLOW_INSECURE)." if scheme == "http" else ".")
        )
    if "@" in parts.netloc or parts.username or parts.password:
        raise WebhookUrlRefused(f"{field}: credentials in the URL are not allowed.")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise WebhookUrlRefused(f"{field}: '{shown(url)}' names no host.")
    try:
        check_host_syntax(host)
    except RemoteRefused as exc:
        raise WebhookUrlRefused(f"{field}: {exc.detail}") from None
    if not host_allowed(host, settings.webhook_hosts):
        raise WebhookUrlRefused(
            f"{field}: the host '{host}' is not on the allow-list of webhook hosts "
            "(TOV_WEBHOOK_HOSTS)."
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    default_port = 443 if scheme == "https" else 80
    return Receiver(url=url, scheme=scheme, host=host, port=port or default_port, path=path)


def resolve_receiver(receiver: Receiver, settings: Settings, *, field: str = "url") -> str:
    """Rule 4: the one address to connect to (resolved once, every address public)."""
    if settings.webhook_allow_insecure:
        try:
            return resolve_once_any(receiver.host, receiver.port)
        except RemoteRefused as exc:
            raise WebhookUrlRefused(f"{field}: {exc.detail}") from None
    try:
        return resolve_once(receiver.host, receiver.port)
    except RemoteRefused as exc:
        raise WebhookUrlRefused(f"{field}: {exc.detail}") from None


def resolve_once_any(host: str, port: int) -> str:
    """The first address of `host`, private ones included (insecure receivers allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise RemoteRefused(f"'{host}' could not be resolved ({exc}).") from None
    if not infos:
        raise RemoteRefused(f"'{host}' resolves to no address.")
    return str(infos[0][4][0])


def check_receiver(url: str, settings: Settings, *, field: str = "url") -> Receiver:
    """Every rule, at registration: the URL parses and its host resolves to allowed addresses."""
    receiver = parse_receiver(url, settings, field=field)
    resolve_receiver(receiver, settings, field=field)
    return receiver
