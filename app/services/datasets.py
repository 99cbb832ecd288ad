"""Datasets: upload or register, validate once, then refer to them by id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.dataset_checks import DatasetInvalid, DatasetSummary, check_jsonl
from app.errors import Conflict, InvalidInput, NotFound, UnsupportedMediaType
from app.models import Dataset, Job, Tenant, new_id
from app.storage import dataset_path, move_into_place, receive_to_temp, resolve_under_roots

FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def _check(path: Path, *, name: str, settings: Settings) -> DatasetSummary:
    try:
        return check_jsonl(
            path, name=name, max_rows=settings.max_rows, max_line_bytes=settings.max_line_bytes
        )
    except DatasetInvalid as exc:
        raise InvalidInput(str(exc), errors=exc.errors) from exc


def _row(
    tenant: Tenant, dataset_id: str, name: str, uri: str, summary: DatasetSummary, uploaded: bool
) -> Dataset:
    return Dataset(
        id=dataset_id,
        tenant_id=tenant.id,
        name=name,
        uri=uri,
        file_format="jsonl",
        row_format=summary.row_format,
        rows=summary.rows,
        size_bytes=summary.size_bytes,
        sha256=summary.sha256,
        columns=summary.columns,
        uploaded=uploaded,
    )


async def upload_dataset(
    *,
    session: Session,
    settings: Settings,
    tenant: Tenant,
    name: str,
    content_type: str,
    chunks: AsyncIterator[bytes],
) -> Dataset:
    """Stream an upload to the artifact store (size-limited while streaming), then validate it."""
    if content_type not in (
        "application/x-ndjson",
        "application/jsonl",
        "application/json",
        "application/octet-stream",
        "text/plain",
        "",
    ):
        raise UnsupportedMediaType(f"Content-Type '{content_type}' is not a JSONL upload.")
    temp = await receive_to_temp(
        chunks, root=settings.artifact_root, limit=settings.max_upload_bytes
    )
    try:
        summary = _check(temp, name=name, settings=settings)
        dataset_id = new_id("ds")
        final = dataset_path(settings.artifact_root, tenant.id, dataset_id, "jsonl")
        move_into_place(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    dataset = _row(tenant, dataset_id, name, str(final.resolve()), summary, uploaded=True)
    session.add(dataset)
    session.flush()
    return dataset


def register_dataset(
    *, session: Session, settings: Settings, tenant: Tenant, uri: str, name: str | None
) -> Dataset:
    """Register a server-side file under a configured data root (validated now, read later)."""
    path = resolve_under_roots(uri, settings.data_roots)
    if path.suffix.lower() not in FILE_FORMATS:
        raise InvalidInput(f"'{uri}': only JSONL files (.jsonl) are supported for now.")
    summary = _check(path, name=name or path.name, settings=settings)
    dataset = _row(tenant, new_id("ds"), name or path.name, str(path), summary, uploaded=False)
    session.add(dataset)
    session.flush()
    return dataset


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
    """A job's `pool`/`validation`: a dataset id, or a file:// path registered on the fly."""
    try:
        if ref.startswith("ds_"):
            return get_dataset(session=session, tenant=tenant, dataset_id=ref)
        if ref.startswith("file://") or ref.startswith("/"):
            return register_dataset(
                session=session, settings=settings, tenant=tenant, uri=ref, name=None
            )
    except (NotFound, InvalidInput) as exc:
        raise type(exc)(f"{field_name}: {exc.detail}", errors=exc.errors) from exc
    raise InvalidInput(
        f"{field_name}: '{ref}' is neither a dataset id (ds_...) nor a file:// path."
    )


def delete_dataset(*, session: Session, tenant: Tenant, dataset_id: str) -> None:
    """Delete a dataset no job refers to; an uploaded file is removed from the store."""
    dataset = get_dataset(session=session, tenant=tenant, dataset_id=dataset_id)
    used = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(or_(Job.pool_dataset_id == dataset.id, Job.validation_dataset_id == dataset.id))
    )
    if used:
        raise Conflict(f"Dataset '{dataset_id}' is used by {used} job(s); delete them first.")
    session.delete(dataset)
    session.flush()
    if dataset.uploaded:
        Path(dataset.uri).unlink(missing_ok=True)
