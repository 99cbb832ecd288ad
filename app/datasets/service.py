"""Datasets: upload or register, validate once, then refer to them by id.

Services only flush; the request that calls them commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.artifacts import artifact_store, dataset_key, remove_dataset
from app.core.config import Settings
from app.core.errors import Conflict, NotFound, PayloadTooLarge
from app.core.limits import check_upload_rate
from app.core.models import Dataset, Job, Tenant, new_id
from app.core.storage import receive_to_temp
from app.datasets.quota import check_storage, over_quota, storage_room
from app.datasets.sources.network import Fetched
from app.datasets.sources.registry import fetch_reference
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
) -> tuple[str, str, DatasetSummary]:
    """Validate a received file (upload or download) and move it into the artifact store under a
    new id; returns the id, the stored uri (a local path, or s3:// with an S3 store) and the
    summary."""
    try:
        file_format = detect_file_format(temp, declared=declared, name=name)
        summary = validate_file(temp, name=name, file_format=file_format, settings=settings)
        dataset_id = new_id("ds")
        suffix = STORED_SUFFIX[file_format]
        store, key = artifact_store(settings), dataset_key(tenant.id, dataset_id, suffix)
        store.put_file(temp, key, move=True)
    finally:
        temp.unlink(missing_ok=True)
    return dataset_id, store.url(key), summary


@dataclass(frozen=True)
class Prepared:
    """A reference fetched and validated, not yet a row: made with no transaction open."""

    dataset_id: str
    name: str
    uri: str  # where the bytes are now
    summary: DatasetSummary
    uploaded: bool


def add_prepared(session: Session, tenant: Tenant, prepared: Prepared) -> Dataset:
    """Add the dataset's row (its columns are the summary's fields) and flush it."""
    named = {"id": prepared.dataset_id, "name": prepared.name, "uri": prepared.uri}
    columns = {**named, "uploaded": prepared.uploaded, **asdict(prepared.summary)}
    dataset = Dataset(tenant_id=tenant.id, **columns)
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
    end_transaction(session)  # none open while the body streams in and is validated
    temp = await receive_to_temp(chunks, root=settings.artifact_root, limit=limit, refusal=refusal)
    dataset_id, stored, summary = await run_in_threadpool(
        _store, temp, settings=settings, tenant=tenant, name=name, declared=declared
    )
    return add_prepared(session, tenant, Prepared(dataset_id, name, stored, summary, uploaded=True))


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


def end_transaction(session: Session) -> None:
    """Commit what the session did so far (reads only, as callers use it), so that no
    transaction stays open while a file is fetched or validated (issue 15, defect 4)."""
    if session.in_transaction():
        session.commit()


def prepare_reference(
    uri: str,
    *,
    settings: Settings,
    tenant: Tenant,
    name: str | None,
    check_quota: Callable[[int], None],
) -> Prepared:
    """Fetch and validate `uri` as `tenant` may read it (a file:// path in place; an https://,
    s3:// or hf:// copy into the store, whose size `check_quota` may refuse). Blocking: call it
    in a thread, with no database transaction open."""
    fetched = fetch_reference(uri, settings=settings, tenant=tenant.name)
    shown = name or fetched.name
    if fetched.in_place:
        summary = _validate_in_place(fetched, shown, settings)
        return Prepared(new_id("ds"), shown, str(fetched.path), summary, uploaded=False)
    try:
        check_quota(fetched.path.stat().st_size)
    except BaseException:
        fetched.path.unlink(missing_ok=True)
        raise
    declared = CONTENT_TYPES.get(fetched.content_type)
    dataset_id, stored, summary = _store(
        fetched.path, settings=settings, tenant=tenant, name=shown, declared=declared
    )
    return Prepared(dataset_id, shown, stored, summary, uploaded=True)


def register_dataset(
    *, session: Session, settings: Settings, tenant: Tenant, uri: str, name: str | None
) -> Dataset:
    """Register a reference now (`?wait=true`, and every file:// path): fetched and validated
    with no transaction open, then one short transaction adds the row. A server-side file stays
    where it is; an https://, s3:// or hf:// reference is copied into the store (under the SSRF
    and tenancy rules of app.datasets.sources). Counts against the tenant's upload rate; a copy
    against its storage quota."""
    check_upload_rate(tenant.id, settings)
    end_transaction(session)

    def check_quota(size: int) -> None:
        check_storage(session, settings, tenant, size)
        end_transaction(session)

    prepared = prepare_reference(
        uri, settings=settings, tenant=tenant, name=name, check_quota=check_quota
    )
    return add_prepared(session, tenant, prepared)


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
    # A decontamination reference (`decontaminate_against`, kept in the job's params).
    params = session.scalars(select(Job.params).where(Job.tenant_id == tenant.id))
    used += sum(1 for p in params if dataset.id in ((p or {}).get("decontaminate_against") or []))
    if used:
        raise Conflict(f"Dataset '{dataset_id}' is used by {used} job(s); delete them first.")
    session.delete(dataset)
    session.flush()
    if dataset.uploaded:
        remove_dataset(dataset.uri)
