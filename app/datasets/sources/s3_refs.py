"""`s3://BUCKET/KEY` references parsed and checked against the prefixes a tenant may read
(app.datasets.sources.tenancy), before anything is fetched; the fetch is `s3`'s."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from app.datasets.sources.network import RemoteRefused, shown
from app.datasets.sources.tenancy import S3Prefix

MAX_KEY_CHARS = 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Ref:
    uri: str
    bucket: str
    key: str

    @property
    def path(self) -> str:
        return f"{self.bucket}/{self.key}"


def parse_s3(uri: str, own: list[S3Prefix], shared: list[S3Prefix], tenant: str) -> S3Ref:
    """`s3://bucket/key` inside a prefix the tenant may read (app.datasets.sources.tenancy);
    RemoteRefused says what is wrong."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    if not uri.lower().startswith("s3://"):
        raise RemoteRefused(f"'{shown(uri)}' is not an s3://BUCKET/KEY reference.")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise RemoteRefused(f"'{shown(uri)}' must look like s3://BUCKET/KEY (name an object).")
    if "@" in bucket or ":" in bucket:
        raise RemoteRefused("Credentials, hosts and ports are not allowed in an s3:// reference.")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise RemoteRefused(f"'{bucket[:100]}' is not a valid S3 bucket name.")
    if not any(prefix.bucket in ("*", bucket) for prefix in [*own, *shared]):
        raise RemoteRefused(
            f"The bucket '{bucket}' is not on the allow-list of S3 buckets (TOV_S3_BUCKETS, "
            "TOV_S3_PREFIXES, TOV_S3_SHARED_PREFIXES)."
        )
    _check_key(uri, key)
    if not any(prefix.covers(bucket, key) for prefix in [*own, *shared]):
        raise _outside(uri, own, shared, tenant)
    return S3Ref(uri=uri, bucket=bucket, key=key)


def _check_key(uri: str, key: str) -> None:
    """The key taken literally, and once percent-decoded (a server that decodes keys must not
    see `..` either): no empty, `.` or `..` segments, no `?` or `#`, not too long."""
    if len(key) > MAX_KEY_CHARS:
        raise RemoteRefused(f"The S3 key is longer than {MAX_KEY_CHARS} characters.")
    if "?" in key or "#" in key:
        raise RemoteRefused("The S3 key contains '?' or '#' (versions and fragments are refused).")
    if key.endswith("/"):
        raise RemoteRefused(f"'{shown(uri)}' names a folder; name one object (a file).")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise RemoteRefused(f"'{shown(uri)}': the key has an empty, '.' or '..' segment.")
    decoded = unquote(key)
    if any(part in ("", ".", "..") for part in re.split(r"[/\\]", decoded)) or "\x00" in decoded:
        raise RemoteRefused(
            f"'{shown(uri)}': the key has an empty, '.' or '..' segment once percent-decoded."
        )


def _outside(uri: str, own: list[S3Prefix], shared: list[S3Prefix], tenant: str) -> RemoteRefused:
    mine = ", ".join(str(p) for p in own[:5]) or "none"
    common = ", ".join(str(p) for p in shared[:5]) or "none"
    return RemoteRefused(
        f"'{shown(uri)}' is outside the S3 prefixes tenant '{tenant[:100]}' may read: its own "
        f"({mine}; TOV_S3_BUCKETS, TOV_S3_PREFIXES) and the shared ones ({common}; "
        "TOV_S3_SHARED_PREFIXES)."
    )
