"""API keys: 32 random bytes behind a visible prefix, stored as a SHA-256 hash, shown once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import session_scope
from app.errors import Unauthorized
from app.models import ApiKey, Tenant, utcnow

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
    return len(rows)


def tenant_for_key(*, session: Session, key: str) -> Tenant | None:
    return session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )


SessionDep = Annotated[Session, Depends(session_scope)]


def current_tenant(request: Request, session: SessionDep) -> Tenant:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "Missing API key: send 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tenant = tenant_for_key(session=session, key=key.strip())
    if tenant is None:
        raise Unauthorized("Invalid or revoked API key.", headers={"WWW-Authenticate": "Bearer"})
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
