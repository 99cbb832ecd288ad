"""/v1/datasets: upload a dataset body, or register a reference (file://, https://, s3://, hf://)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.core.auth import SessionDep, TenantDep
from app.core.config import get_settings
from app.core.errors import InvalidInput, PayloadTooLarge
from app.schemas import DatasetRead, DatasetRegister
from app.services import datasets as service

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_DOC = {
    "requestBody": {
        "description": "Either a JSONL file as the raw body (application/x-ndjson), or "
        '{"uri": "file:///...", "name": ...} (application/json) to register a server file.',
        "content": {
            "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": DatasetRegister.model_json_schema()},
        },
    }
}


def _register_body(raw: bytes) -> DatasetRegister:
    """The JSON body of a registration; 422 naming each bad field, like FastAPI's own bodies."""
    try:
        return DatasetRegister.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(("body", *(str(part) for part in err["loc"]))),
                "reason": err["msg"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        raise InvalidInput(detail, errors=errors) from None


@router.post("", status_code=201, response_model=DatasetRead, openapi_extra=UPLOAD_DOC)
async def create_dataset(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    name: Annotated[str | None, Query(max_length=300)] = None,
) -> DatasetRead:
    settings = get_settings()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = _register_body(await request.body())
        dataset = await run_in_threadpool(  # may download or read a big file: not on the loop
            service.register_dataset,
            session=session,
            settings=settings,
            tenant=tenant,
            uri=body.uri,
            name=body.name,
        )
    else:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"The upload exceeds the limit of {settings.max_upload_bytes} bytes."
            )
        dataset = await service.upload_dataset(
            session=session,
            settings=settings,
            tenant=tenant,
            name=name or "upload.jsonl",
            content_type=content_type,
            chunks=request.stream(),
        )
    session.commit()
    return DatasetRead.model_validate(dataset)


@router.get("", response_model=list[DatasetRead])
def list_datasets(session: SessionDep, tenant: TenantDep) -> list[DatasetRead]:
    return [
        DatasetRead.model_validate(d) for d in service.list_datasets(session=session, tenant=tenant)
    ]


@router.get("/{dataset_id}", response_model=DatasetRead)
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> DatasetRead:
    return DatasetRead.model_validate(
        service.get_dataset(session=session, tenant=tenant, dataset_id=dataset_id)
    )


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    service.delete_dataset(session=session, tenant=tenant, dataset_id=dataset_id)
    session.commit()
    return Response(status_code=204)
