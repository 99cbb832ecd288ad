"""/v1/datasets: upload a dataset body, or register a reference (file://, https://, s3://, hf://)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.core.auth import SessionDep, TenantDep
from app.core.config import get_settings
from app.datasets import service
from app.datasets.schemas import DatasetRead, DatasetRegister, parse_register_body

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
        body = parse_register_body(await request.body())
        dataset = await run_in_threadpool(  # may download or read a big file: not on the loop
            service.register_dataset,
            session=session,
            settings=settings,
            tenant=tenant,
            uri=body.uri,
            name=body.name,
        )
    else:
        dataset = await service.upload_dataset(
            session=session,
            settings=settings,
            tenant=tenant,
            name=name or "upload.jsonl",
            content_type=content_type,
            content_length=request.headers.get("content-length", ""),
            chunks=request.stream(),
        )
    session.commit()
    return DatasetRead.model_validate(dataset)


@router.get("", response_model=list[DatasetRead])
def list_datasets(session: SessionDep, tenant: TenantDep) -> list[DatasetRead]:
    datasets = service.list_datasets(session=session, tenant=tenant)
    return [DatasetRead.model_validate(d) for d in datasets]


@router.get("/{dataset_id}", response_model=DatasetRead)
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> DatasetRead:
    dataset = service.get_dataset(session=session, tenant=tenant, dataset_id=dataset_id)
    return DatasetRead.model_validate(dataset)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    service.delete_dataset(session=session, tenant=tenant, dataset_id=dataset_id)
    session.commit()
    return Response(status_code=204)
