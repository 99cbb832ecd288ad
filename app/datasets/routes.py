"""/v1/datasets: upload a dataset body, or register a reference (file://, https://, s3://, hf://)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.core.auth import SessionDep, TenantDep
from app.core.config import get_settings
from app.core.models import DatasetStatus
from app.datasets import ingest, listing, references, service
from app.datasets.schemas import DatasetRead, DatasetRegister, parse_register_body
from app.datasets.sources.registry import is_remote

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
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    name: Annotated[str | None, Query(max_length=300)] = None,
    wait: Annotated[
        bool,
        Query(
            description="https://, s3:// and hf:// references: fetch and validate before "
            "answering (201, or the 4xx) instead of answering 202 `validating` at once"
        ),
    ] = False,
) -> DatasetRead:
    """An upload or a file:// path answers 201 once validated (in a thread, no transaction
    open); a remote reference answers 202 `validating` and is fetched after the answer (poll
    GET /v1/datasets/{id}), unless `wait=true`."""
    settings = get_settings()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = parse_register_body(await request.body())
        later = is_remote(body.uri) and not wait
        dataset = await run_in_threadpool(  # may download or read a big file: not on the loop
            references.register_later if later else service.register_dataset,
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
    await run_in_threadpool(session.commit)
    if dataset.status == DatasetStatus.VALIDATING:
        ingest.start([dataset.id])  # after the commit: the thread finds the row
        response.status_code = 202
        response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return DatasetRead.model_validate(dataset)


NEXT_PAGE_HEADERS = {
    "X-Next-Cursor": {
        "description": "Pass as `cursor` for the next page; absent on the last page.",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'The next page\'s URL as `<url>; rel="next"`; absent on the last page.',
        "schema": {"type": "string"},
    },
}


@router.get(
    "",
    response_model=list[DatasetRead],
    responses={200: {"headers": NEXT_PAGE_HEADERS}},
)
def list_datasets(
    request: Request,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[
        int, Query(ge=1, le=listing.MAX_DATASETS_PAGE, description="datasets in this page")
    ] = listing.DATASETS_PAGE,
    cursor: Annotated[
        str | None, Query(max_length=200, description="X-Next-Cursor of the page before")
    ] = None,
) -> list[DatasetRead]:
    """The tenant's datasets, newest first, one page at a time. The body stays a bare list (as
    before paging existed, so older clients and the dashboard still read it); the next page's
    cursor comes in the `X-Next-Cursor` and `Link` headers, and uses the same keyset on
    (created_at, id) as GET /v1/jobs."""
    datasets, next_cursor = listing.list_datasets(
        session=session, tenant=tenant, limit=limit, cursor=cursor
    )
    if next_cursor:
        response.headers["X-Next-Cursor"] = next_cursor
        following = request.url.include_query_params(limit=limit, cursor=next_cursor)
        response.headers["Link"] = f'<{following}>; rel="next"'
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
