"""Shared schema pieces: strict request bodies, RFC 3339 times, metadata filters, reference
patterns. Each domain keeps its own schemas (app.jobs.schemas, app.results.schemas).
Requests forbid unknown fields; responses are explicit."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    WithJsonSchema,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
RFC3339_EXAMPLE = "2026-01-31T09:30:00Z"


def parse_rfc3339(value: object) -> datetime | None:
    """An RFC 3339 date-time with its offset (what OpenAPI's `format: date-time` means), in UTC.

    Stricter than pydantic's datetime, which also takes Unix times ("0") and naive values.
    """
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    text = value if isinstance(value, str) else ""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"must be an RFC 3339 date-time with a time zone, e.g. {RFC3339_EXAMPLE}")
    day, minutes, seconds, fraction, offset = match.groups()
    seconds = "59" if seconds == "60" else seconds  # a leap second: the end of that minute
    fraction = (fraction or "")[:7]  # microseconds at most
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{day}T{minutes}:{seconds}{fraction}{offset}")
    except ValueError:
        raise ValueError(f"'{text[:40]}' is not a valid date and time") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"'{text[:40]}' is out of range once converted to UTC") from None


# A query parameter of this type answers 422 for anything but an RFC 3339 date-time.
OptionalRfc3339 = Annotated[datetime | None, BeforeValidator(parse_rfc3339)]


def _key_value(value: str) -> str:
    key, sep, _ = value.partition(":")
    if not sep or not key:
        raise ValueError("must look like key:value (a non-empty key, a colon, then the value)")
    return value


# One `?metadata=key:value` filter.
MetadataFilter = Annotated[
    str,
    AfterValidator(_key_value),
    WithJsonSchema({"type": "string", "pattern": "^[^:]+:"}),
]


# Documented shapes of dataset references: an absolute path, file://..., a remote SCHEME://...
# in printable ASCII without backslashes (app.datasets.sources.network rule 1), or for jobs a
# dataset id. The services refuse anything else with a precise 422.
_REMOTE_PATTERN = r"[A-Za-z][A-Za-z0-9+.-]*://[!-\[\]-~]*$"
URI_PATTERN = rf"^(/|file://|{_REMOTE_PATTERN})"
REFERENCE_PATTERN = rf"^(ds_|/|file://|{_REMOTE_PATTERN})"
