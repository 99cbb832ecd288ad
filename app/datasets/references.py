"""A job's dataset references, and remote references registered for validation later.

A job body names each dataset by id, by a file:// path (validated before its rows are added,
with no transaction open) or by a remote reference (added `validating`: fetched and validated
after the answer by app.datasets.ingest, while the job waits for it).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import InvalidInput, NotFound
from app.core.limits import check_upload_rate
from app.core.models import Dataset, DatasetStatus, Tenant, new_id, utcnow
from app.datasets.service import (
    Prepared,
    add_prepared,
    end_transaction,
    get_dataset,
    prepare_reference,
)
from app.datasets.sources.registry import check_remote, is_remote


def register_later(
    *, session: Session, settings: Settings, tenant: Tenant, uri: str, name: str | None
) -> Dataset:
    """Add a `validating` row for a remote reference (flushed, not fetched): after the commit
    app.datasets.ingest fetches and validates it outside any transaction. `uri` stays the
    reference until then; the summary columns are placeholders."""
    check_upload_rate(tenant.id, settings)
    check_remote(uri, settings=settings, tenant=tenant.name)  # rule refusals: 422 at once
    shown = name or (uri.rstrip("/").rsplit("/", 1)[-1][:300] or "reference")
    dataset = Dataset(
        id=new_id("ds"),
        tenant_id=tenant.id,
        name=shown,
        uri=uri,
        file_format="",
        row_format="",
        rows=0,
        size_bytes=0,
        sha256="",
        columns=[],
        uploaded=False,
        status=DatasetStatus.VALIDATING,
        validation_started_at=utcnow(),
        validation_attempts=1,
    )
    session.add(dataset)
    session.flush()
    return dataset


def is_local(ref: str) -> bool:
    return ref.startswith("file://") or ref.startswith("/")


def prepare_local_refs(
    *, session: Session, settings: Settings, tenant: Tenant, refs: list[tuple[str, str]]
) -> list[Prepared | None]:
    """Validate a job's file:// references (field name, reference) before its rows are added,
    with no transaction open; None for the others (ids, and remote references, which are
    validated after the answer)."""
    end_transaction(session)
    prepared: list[Prepared | None] = []
    for field_name, ref in refs:
        if not is_local(ref):
            prepared.append(None)
            continue
        with _named(field_name):
            check_upload_rate(tenant.id, settings)
            prepared.append(
                prepare_reference(
                    ref, settings=settings, tenant=tenant, name=None, check_quota=lambda _: None
                )
            )
    return prepared


class _named:
    """Prefix a refusal's detail with the job field it concerns (`pool: ...`)."""

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, (NotFound, InvalidInput)):
            raise type(exc)(f"{self.field_name}: {exc.detail}", errors=exc.errors) from exc


def resolve_reference(
    *,
    session: Session,
    settings: Settings,
    tenant: Tenant,
    ref: str,
    field_name: str,
    prepared: Prepared | None = None,
) -> Dataset:
    """A job's `pool`/`validation`: a dataset id (refused if its validation failed), a file://
    path validated by prepare_local_refs, or a remote reference added `validating` (fetched
    after the answer: the job waits for it)."""
    with _named(field_name):
        if ref.startswith("ds_"):
            dataset = get_dataset(session=session, tenant=tenant, dataset_id=ref)
            if dataset.status == DatasetStatus.FAILED:
                raise InvalidInput(failed_detail(dataset), errors=dataset.errors)
            return dataset
        if prepared is not None:
            return add_prepared(session, tenant, prepared)
        if is_remote(ref):
            return register_later(
                session=session, settings=settings, tenant=tenant, uri=ref, name=None
            )
    raise InvalidInput(
        f"{field_name}: '{ref[:200]}' is neither a dataset id (ds_...), a file:// path nor an "
        "https://, s3:// or hf:// reference."
    )


def failed_detail(dataset: Dataset, first: int = 3) -> str:
    """What a failed dataset's validation found: its detail and its first errors."""
    detail = f"dataset '{dataset.id}' ({dataset.uri[:200]}) failed validation: {dataset.error}"
    shown = [
        ", ".join(f"{k} {v}" for k, v in error.items() if v is not None)
        for error in (dataset.errors or [])[:first]
    ]
    return detail + (f"; first errors: {'; '.join(shown)}" if shown else "")
