"""Keyset pagination on (created_at, id), newest first: the one cursor of every list endpoint.

A keyset cursor (not an offset), so a page never repeats or skips a row when others are added or
deleted between two requests; the id breaks ties between equal `created_at`s.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput


def encode_cursor(row: Any) -> str:
    """The opaque cursor that resumes after `row`."""
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str, *, issuer: str) -> tuple[datetime, str]:
    """(created_at, id) of the last row of the page before; 422 naming `issuer` otherwise."""
    refused = InvalidInput(f"cursor: not a cursor returned by {issuer}.")
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        at = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError) as exc:
        raise refused from exc
    if at.tzinfo is None or "\x00" in row_id:  # never in a cursor of ours
        raise refused
    return at, row_id


def keyset_page(
    session: Session,
    query: Select[Any],
    model: Any,
    *,
    limit: int,
    cursor: str | None,
    issuer: str,
) -> tuple[list[Any], str | None]:
    """One page of `query` (rows of `model`), newest first, and the next page's cursor (None on
    the last). One row more than the page is read to know whether another page follows."""
    if cursor:
        created, row_id = decode_cursor(cursor, issuer=issuer)
        query = query.where(
            or_(model.created_at < created, and_(model.created_at == created, model.id < row_id))
        )
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor
