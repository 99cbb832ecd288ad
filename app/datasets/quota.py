"""The per-tenant storage quota (issue 15, defect 5): `TOV_MAX_STORED_BYTES_PER_TENANT`.

What counts is what a tenant keeps in the artifact store: the sizes of its uploaded datasets and
of the remote references copied there (`Dataset.uploaded`). A server file registered in place
(file://) is not copied, so it does not count. An upload is refused before a byte is read when its
declared length does not fit, and cut off while streaming when it outgrows the room left; a
reference copy is refused once its size is known. Two uploads of one tenant racing each other
may each see the same room, so the quota can be passed by at most the uploads in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import PayloadTooLarge
from app.core.models import Dataset, Tenant

SETTING = "TOV_MAX_STORED_BYTES_PER_TENANT"


@dataclass(frozen=True)
class Room:
    quota: int
    used: int

    @property
    def left(self) -> int:
        return max(0, self.quota - self.used)


def stored_bytes(session: Session, tenant_id: str) -> int:
    """Bytes of the tenant's datasets held in the artifact store."""
    total = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
            Dataset.tenant_id == tenant_id, Dataset.uploaded.is_(True)
        )
    )
    return int(total or 0)


def storage_room(session: Session, settings: Settings, tenant: Tenant) -> Room | None:
    """The tenant's quota and use; None when the deployment sets no quota."""
    quota = settings.max_stored_bytes_per_tenant
    if quota <= 0:
        return None
    return Room(quota=quota, used=stored_bytes(session, tenant.id))


def over_quota(tenant: Tenant, room: Room, adding: int | None) -> PayloadTooLarge:
    """The 413 naming the quota, the current use and the setting."""
    size = f"{adding} bytes" if adding is not None else f"more than the {room.left} bytes left"
    return PayloadTooLarge(
        f"Storage quota exceeded: tenant '{tenant.name[:100]}' stores {room.used} bytes of "
        f"datasets and this one adds {size}, over the quota of {room.quota} bytes per tenant "
        f"({SETTING}). Delete datasets it no longer needs (DELETE /v1/datasets/ID) or ask the "
        "operator to raise the quota."
    )


def check_storage(session: Session, settings: Settings, tenant: Tenant, adding: int) -> None:
    """Refuse (413) `adding` more bytes that would take the tenant over its quota."""
    room = storage_room(session, settings, tenant)
    if room is not None and adding > room.left:
        raise over_quota(tenant, room, adding)
