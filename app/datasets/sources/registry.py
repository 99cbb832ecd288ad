"""The kinds of dataset reference, chosen by URI scheme: one fetch function per scheme.

`file` (a server path, used in place), `https`, `s3` and `hf` (copied into the artifact store).
Any other `SCHEME://` goes to the https source, whose scheme rule refuses it precisely ("not
configured" for gs://, az://, ...; "not allowed" otherwise).
"""

from __future__ import annotations

from typing import Protocol

from app.core.config import Settings
from app.datasets.sources.file import locate_file
from app.datasets.sources.hf import fetch_hf
from app.datasets.sources.https import fetch_https
from app.datasets.sources.network import Fetched
from app.datasets.sources.s3 import fetch_s3


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
