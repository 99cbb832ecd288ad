"""The kinds of dataset reference, chosen by URI scheme: one fetch function per scheme.

`file` (a server path, used in place), `https`, `s3` and `hf` (copied into the artifact store).
Any other `SCHEME://` goes to the https source, whose scheme rule refuses it precisely ("not
configured" for gs://, az://, ...; "not allowed" otherwise).
"""

from __future__ import annotations

from typing import Protocol

from app.core.config import Settings
from app.datasets.sources.file import locate_file
from app.datasets.sources.hf import fetch_hf, parse_hf
from app.datasets.sources.https import fetch_https, parse_remote
from app.datasets.sources.network import Fetched, check_plain, not_configured, resolve_once
from app.datasets.sources.s3 import check_endpoint, fetch_s3
from app.datasets.sources.s3_refs import parse_s3
from app.datasets.sources.tenancy import s3_prefixes_for


class Source(Protocol):
    """Makes the file a reference names available for validation."""

    def __call__(self, uri: str, *, settings: Settings, tenant: str) -> Fetched: ...


SOURCES: dict[str, Source] = {
    "file": locate_file,
    "https": fetch_https,
    "s3": fetch_s3,
    "hf": fetch_hf,
}


def is_remote(uri: str) -> bool:
    """Whether `uri` is a `SCHEME://` reference other than `file://`."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    return scheme not in ("", "file") and "://" in uri[:20]


def fetch_reference(uri: str, *, settings: Settings, tenant: str) -> Fetched:
    """The file `uri` names, through the source for its scheme, as tenant `tenant` (its name)
    may read it: file:// and s3:// locations are per tenant (app.datasets.sources.tenancy)."""
    scheme = uri.split(":", 1)[0].lower() if is_remote(uri) else "file"
    return SOURCES.get(scheme, fetch_https)(uri, settings=settings, tenant=tenant)


def check_remote(uri: str, *, settings: Settings, tenant: str) -> None:
    """The rules a remote reference must pass before any byte is fetched (scheme, settings,
    allowed hosts and their addresses, the tenant's S3 prefixes, the HF reference's shape):
    checked at create, so a refused reference answers 422 before anything is queued; the
    fetch (after the answer) checks them again."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "s3":
        check_plain(uri)
        if not (settings.s3_buckets or settings.s3_prefixes or settings.s3_shared_prefixes):
            raise not_configured("s3")
        own, shared = s3_prefixes_for(settings, tenant)
        parse_s3(uri, own, shared, tenant)
        check_endpoint(settings)
    elif scheme == "hf":
        check_plain(uri)
        if settings.hf_cache is None:
            raise not_configured("hf")
        parse_hf(uri)
    else:  # the host's address too (one DNS lookup): a private one is refused at once
        target = parse_remote(uri, settings.remote_hosts)
        resolve_once(target.host, target.port)
