"""Datasets: upload or register, validate once, then refer to them by id.

Services only flush; the request that calls them commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from app.core.limits import check_upload_rate
from app.core.models import Dataset, Job, Tenant, new_id
from app.core.storage import dataset_path, move_into_place, receive_to_temp
from app.datasets.quota import check_storage, over_quota, storage_room
from app.datasets.sources.network import Fetched
from app.datasets.sources.registry import fetch_reference, is_remote
from app.datasets.validation import DatasetSummary, validate_file
from app.datasets.validation.detection import (
    CONTENT_TYPES,
    STORED_SUFFIX,
    detect_file_format,
    format_for_content_type,
    format_for_name,
)


def _store(
    temp: Path, *, settings: Settings, tenant: Tenant, name: str, declared: str | None
) -> tuple[str, Path, DatasetSummary]:
    """Validate a received file (upload or download) and move it into the store under a new id."""
    try:
        file_format = detect_file_format(temp, declared=declared, name=name)
        summary = validate_file(temp, name=name, file_format=file_format, settings=settings)
        dataset_id = new_id("ds")
        suffix = STORED_SUFFIX[file_format]
        final = dataset_path(settings.artifact_root, tenant.id, dataset_id, suffix)
        move_into_place(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return dataset_id, final, summary


def _add(
    session: Session,
    tenant: Tenant,
    *,
    dataset_id: str,
    name: str,
    uri: str,
    summary: DatasetSummary,
    uploaded: bool,
) -> Dataset:
    """Add the dataset's row (its columns are the summary's fields) and flush it."""
    dataset = Dataset(
        id=dataset_id, tenant_id=tenant.id, name=name, uri=uri, uploaded=uploaded, **asdict(summary)
    )
    session.add(dataset)
    session.flush()
    return dataset


async def upload_dataset(
    *,
    session: Session,
    settings: Settings,
    tenant: Tenant,
    name: str,
    content_type: str,
    content_length: str,
    chunks: AsyncIterator[bytes],
) -> Dataset:
    """Stream an upload to the artifact store (size-limited while streaming), then validate it.
    Counts against the tenant's upload rate and storage quota before a byte is read."""
    check_upload_rate(tenant.id, settings)
    if content_length.isdigit() and int(content_length) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"The upload exceeds the limit of {settings.max_upload_bytes} bytes.")
    declared = format_for_content_type(content_type)  # 415 for anything but a dataset type
    limit, refusal = _upload_limit(session, settings, tenant, content_length)
    temp = await receive_to_temp(chunks, root=settings.artifact_root, limit=limit, refusal=refusal)
    dataset_id, final, summary = await run_in_threadpool(
        _store, temp, settings=settings, tenant=tenant, name=name, declared=declared
    )
    return _add(
        session,
        tenant,
        dataset_id=dataset_id,
        name=name,
        uri=str(final.resolve()),
        summary=summary,
        uploaded=True,
    )


def _upload_limit(
    session: Session, settings: Settings, tenant: Tenant, content_length: str
) -> tuple[int, Callable[[], Exception] | None]:
    """The bytes an upload may have (the upload limit, or less: the storage quota's room left)
    and what to answer past them; a declared length that does not fit is refused at once."""
    room = storage_room(session, settings, tenant)
    if room is None or room.left >= settings.max_upload_bytes:
        return settings.max_upload_bytes, None
    if content_length.isdigit() and int(content_length) > room.left:
        raise over_quota(tenant, room, int(content_length))
    return room.left, lambda: over_quota(tenant, room, None)


def register_dataset(
    *, session: Session, settings: Settings, tenant: Tenant, uri: str, name: str | None
) -> Dataset:
    """Register a server-side file under a data root of the tenant's (validated now, read
    later), or copy an https://, s3:// or hf:// reference into the store (under the SSRF and
    tenancy rules of app.datasets.sources) and validate it like an upload. Counts against the
    tenant's upload rate; a copy against its storage quota."""
    check_upload_rate(tenant.id, settings)
    fetched = fetch_reference(uri, settings=settings, tenant=tenant.name)
    if not fetched.in_place:
        try:
            check_storage(session, settings, tenant, fetched.path.stat().st_size)
        except BaseException:
            fetched.path.unlink(missing_ok=True)
            raise
    shown = name or fetched.name
    if fetched.in_place:
        summary = _validate_in_place(fetched, shown, settings)
        dataset_id, stored = new_id("ds"), fetched.path
    else:
        declared = CONTENT_TYPES.get(fetched.content_type)
        dataset_id, final, summary = _store(
            fetched.path, settings=settings, tenant=tenant, name=shown, declared=declared
        )
        stored = final.resolve()
    return _add(
        session,
        tenant,
        dataset_id=dataset_id,
        name=shown,
        uri=str(stored),
        summary=summary,
        uploaded=not fetched.in_place,
    )


def _validate_in_place(fetched: Fetched, shown: str, settings: Settings) -> DatasetSummary:
    file_format = format_for_name(fetched.name)
    detect_file_format(fetched.path, declared=file_format, name=shown)  # refuses compressed files
    assert file_format is not None  # the file source admits dataset suffixes only
    return validate_file(fetched.path, name=shown, file_format=file_format, settings=settings)


def get_dataset(*, session: Session, tenant: Tenant, dataset_id: str) -> Dataset:
    dataset = session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant.id)
    )
    if dataset is None:
        raise NotFound(f"Dataset '{dataset_id}' does not exist.")
    return dataset


def list_datasets(*, session: Session, tenant: Tenant, limit: int = 100) -> list[Dataset]:
    return list(
        session.scalars(
            select(Dataset)
            .where(Dataset.tenant_id == tenant.id)
            .order_by(Dataset.created_at.desc())
            .limit(limit)
        )
    )


def resolve_reference(
    *, session: Session, settings: Settings, tenant: Tenant, ref: str, field_name: str
) -> Dataset:
    """A job's `pool`/`validation`: a dataset id, or a file:// path or remote reference
    registered on the fly."""
    try:
        if ref.startswith("ds_"):
            return get_dataset(session=session, tenant=tenant, dataset_id=ref)
        if ref.startswith("file://") or ref.startswith("/") or is_remote(ref):
            return register_dataset(
                session=session, settings=settings, tenant=tenant, uri=ref, name=None
            )
    except (NotFound, InvalidInput) as exc:
        raise type(exc)(f"{field_name}: {exc.detail}", errors=exc.errors) from exc
    raise InvalidInput(
        f"{field_name}: '{ref[:200]}' is neither a dataset id (ds_...), a file:// path nor an "
        "https://, s3:// or hf:// reference."
    )


def delete_dataset(*, session: Session, tenant: Tenant, dataset_id: str) -> None:
    """Delete a dataset no job refers to; an uploaded file is removed from the store."""
    dataset = get_dataset(session=session, tenant=tenant, dataset_id=dataset_id)
    used = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(or_(Job.pool_dataset_id == dataset.id, Job.validation_dataset_id == dataset.id))
    )
    # A later target of a multi-target job (a JSON list: checked here, on SQLite as on Postgres).
    target_lists = session.scalars(
        select(Job.validation_dataset_ids).where(
            Job.tenant_id == tenant.id, Job.validation_dataset_ids.is_not(None)
        )
    )
    used = (used or 0) + sum(1 for ids in target_lists if dataset.id in (ids or [])[1:])
    if used:
        raise Conflict(f"Dataset '{dataset_id}' is used by {used} job(s); delete them first.")
    session.delete(dataset)
    session.flush()
    if dataset.uploaded:
        Path(dataset.uri).unlink(missing_ok=True)
