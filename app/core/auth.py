"""API keys: 32 random bytes behind a visible prefix, stored as a SHA-256 hash, shown once."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import datetime
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.db import get_sessionmaker, session_scope
from app.core.errors import Unauthorized
from app.core.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "tov_"


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe here (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(*, session: Session, tenant_name: str) -> tuple[ApiKey, str]:
    """Create a key for `tenant_name` (creating the tenant if new). Returns the row and the key."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(tenant_id=tenant.id, prefix=prefix, key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def revoke_key(*, session: Session, prefix: str, at: datetime | None = None) -> int:
    """Revoke every active key with this visible prefix; returns how many."""
    rows = session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    ).all()
    for row in rows:
        row.revoked_at = at or utcnow()
    session.flush()
    forget_cached_keys()
    return len(rows)


def tenant_for_key(*, session: Session, key: str) -> Tenant | None:
    return session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )


SessionDep = Annotated[Session, Depends(session_scope)]


# Declares the scheme in OpenAPI; the checks and the messages are ours (auto_error=False).
bearer = HTTPBearer(
    auto_error=False, description="An API key: `Authorization: Bearer tov_...` (never logged)."
)
MAX_KEY_CHARS = 200


# Valid keys are remembered (by hash) for a few seconds, so that polling does not pay a database
# query per request (L1). A revoked key therefore stops working within AUTH_CACHE_SECONDS in every
# API process (at once in the process that revoked it). Unknown keys are never cached.
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_ENTRIES = 10_000
_recent: dict[str, tuple[float, str, str, datetime]] = {}


def forget_cached_keys() -> None:
    _recent.clear()


def _lookup(session: Session, key: str) -> Tenant | None:
    digest = hash_key(key)
    hit = _recent.get(digest)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return Tenant(id=hit[1], name=hit[2], created_at=hit[3])  # a detached copy
    tenant = tenant_for_key(session=session, key=key)
    if tenant is None:
        _recent.pop(digest, None)
        return None
    if len(_recent) >= AUTH_CACHE_ENTRIES:
        _recent.clear()
    _recent[digest] = (now + AUTH_CACHE_SECONDS, tenant.id, tenant.name, tenant.created_at)
    return Tenant(id=tenant.id, name=tenant.name, created_at=tenant.created_at)


def _cached(key: str) -> Tenant | None:
    hit = _recent.get(hash_key(key))
    if hit is not None and hit[0] > time.monotonic():
        return Tenant(id=hit[1], name=hit[2], created_at=hit[3])
    return None


def _lookup_in_own_session(key: str) -> Tenant | None:
    with get_sessionmaker()() as session:
        return _lookup(session, key)


async def current_tenant(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Tenant:
    """The caller's tenant, as a detached copy (only its id is used). Async and independent of
    the request's session: a remembered key costs no thread hop and no query, and a route that
    needs no session of its own (status polling) pays for none."""
    key = credentials.credentials.strip() if credentials else ""
    if not key:
        raise Unauthorized(
            "Missing API key: send 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Never echo or log the key; a key longer than any we issue cannot match.
    tenant = None
    if len(key) <= MAX_KEY_CHARS:
        tenant = _cached(key) or await run_in_threadpool(_lookup_in_own_session, key)
    if tenant is None:
        raise Unauthorized("Invalid or revoked API key.", headers={"WWW-Authenticate": "Bearer"})
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
