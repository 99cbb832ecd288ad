"""Which server folders and S3 prefixes a tenant may read (issue 15, defect 2).

A reference names a file or an object; the deployment decides whose it is. Locations are per
tenant unless the operator says they are shared:

- Per tenant: `TOV_DATA_ROOTS`, `TOV_S3_PREFIXES` and `TOV_S3_BUCKETS`. `{tenant}` in an entry is
  replaced by the tenant's name; an entry without it gets the name appended as its last folder
  (`/srv/data` -> `/srv/data/acme`, `s3://bucket` -> `s3://bucket/acme/`). Listing a folder or a
  bucket therefore never hands one tenant's files to another.
- Shared with every tenant: `TOV_SHARED_DATA_ROOTS` (default: the embedded demo's `demo/data`) and
  `TOV_S3_SHARED_PREFIXES`: public reference data only. Shared means shared: a shared folder
  that holds the tenants' folders (`/srv/data` while tenants live in `/srv/data/{tenant}`) hands
  every tenant's files to every other, so never list one.
- A tenant's name is used only when it is one plain path segment (letters, digits, `.`, `_`, `-`,
  starting with a letter or digit): a name never adds `/`, `..` or `%` to a path or key. A tenant
  with another name has the shared locations only.

Matching is literal and segment-wise: paths after `realpath` (app.core.storage), S3 keys by
prefix ending in `/`, so tenant `ab` never reads `abc/...` and case is never folded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings

TENANT = "{tenant}"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def tenant_segment(name: str) -> str | None:
    """The tenant's name as one path segment, or None when it cannot safely be one."""
    return name if _SEGMENT.match(name) else None


def _expand(template: str, segment: str, sep: str = "/") -> str:
    if TENANT in template:
        return template.replace(TENANT, segment)
    return template.rstrip(sep) + sep + segment


# ---------------------------------------------------------------------------------------------
# Server folders


def data_roots_for(settings: Settings, tenant: str) -> list[Path]:
    """The folders `tenant` may register files from: its own roots, then the shared ones."""
    segment = tenant_segment(tenant)
    if segment is None:
        return list(settings.shared_data_roots)
    own = [Path(_expand(str(entry), segment)) for entry in settings.data_roots]
    return [*own, *settings.shared_data_roots]


def data_roots_hint(settings: Settings, tenant: str) -> str:
    """Where a refused path should have been, for the tenant's error message."""
    if settings.data_roots and tenant_segment(tenant) is None:
        return (
            f" The tenant name '{tenant[:100]}' is not a plain folder name, so it has no data "
            "root of its own (TOV_DATA_ROOTS); only the shared roots (TOV_SHARED_DATA_ROOTS) apply."
        )
    return (
        f" Tenant '{tenant[:100]}' may register files under its own data roots (TOV_DATA_ROOTS) "
        "and the shared ones (TOV_SHARED_DATA_ROOTS) only."
    )


# ---------------------------------------------------------------------------------------------
# S3 prefixes


@dataclass(frozen=True)
class S3Prefix:
    """Objects of `bucket` ("*": any bucket) whose key starts with `prefix` ("" or ends in /)."""

    bucket: str
    prefix: str

    def covers(self, bucket: str, key: str) -> bool:
        return self.bucket in ("*", bucket) and key.startswith(self.prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _s3_prefix(entry: str) -> S3Prefix:
    rest = entry.strip()
    rest = rest[5:] if rest.lower().startswith("s3://") else rest
    bucket, _, prefix = rest.partition("/")
    prefix = "/".join(part for part in prefix.split("/") if part)
    return S3Prefix(bucket=bucket, prefix=prefix + "/" if prefix else "")


def s3_prefixes_for(settings: Settings, tenant: str) -> tuple[list[S3Prefix], list[S3Prefix]]:
    """(the tenant's own S3 prefixes, the shared ones it may read too)."""
    templates = [*settings.s3_prefixes, *(f"s3://{b.strip()}/" for b in settings.s3_buckets)]
    segment = tenant_segment(tenant)
    own = [] if segment is None else [_s3_prefix(_expand(t, segment)) for t in templates]
    return own, [_s3_prefix(entry) for entry in settings.s3_shared_prefixes]
