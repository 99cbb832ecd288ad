"""/v1/jobs/{id}/...: download a job's selection, scores or subset; ask for new selections."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from app.core.auth import SessionDep, TenantDep
from app.core.limits import rate_limit
from app.jobs.schemas import MAX_TARGETS
from app.results import download, explain, leaks, selections
from app.results.export import MEDIA_TYPES, ExportFormat
from app.results.schemas import SelectionCreate, SelectionRead

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(rate_limit)])

FormatQuery = Annotated[ExportFormat, Query(alias="format")]
SelectionIdQuery = Annotated[str | None, Query(max_length=60)]
TargetQuery = Annotated[
    int | None,
    Query(
        ge=0,
        lt=MAX_TARGETS,
        description="which target (validation set) of a multi-target job, 0-based; default 0, "
        "or with selection_id the selection's own target",
    ),
]


ExplainQuery = Annotated[
    bool,
    Query(
        description="add the explanation columns: each row's loss before and after (averaged "
        "over rounds), length bin and rank in it; for /selection also why it was picked (reason)"
    ),
]


def selection_query(
    fmt: FormatQuery = "jsonl",
    selection_id: SelectionIdQuery = None,
    target: TargetQuery = None,
    explain: ExplainQuery = False,
) -> download.SelectionQuery:
    """The query parameters that pick a selection to download (a dependency: one declaration
    for both downloads that take them; `explain` matters to /selection only)."""
    return download.SelectionQuery(
        fmt=fmt, selection_id=selection_id, target=target, explain=explain
    )


SelectionQueryDep = Annotated[download.SelectionQuery, Depends(selection_query)]


def _attachment(file: download.Download, fmt: ExportFormat) -> StreamingResponse:
    return StreamingResponse(
        file.chunks,
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{file.name}.{fmt}"'},
    )


@router.get("/{job_id}/selection")
def download_selection(
    job_id: str, session: SessionDep, tenant: TenantDep, query: SelectionQueryDep
) -> StreamingResponse:
    """One row per selected pool row: index, score, source (`score` or `random`)."""
    file = download.selection_file(session=session, tenant=tenant, job_id=job_id, query=query)
    return _attachment(file, query.fmt)


@router.get("/{job_id}/scores")
def download_scores(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    fmt: FormatQuery = "jsonl",
    target: TargetQuery = None,
    explain: ExplainQuery = False,
) -> StreamingResponse:
    """Every pool row's score for one target (null for the base subset, which is not scored)
    and its length; with `explain=true` also loss_before, loss_after, bin and bin_rank."""
    file = download.scores_file(
        session=session, tenant=tenant, job_id=job_id, fmt=fmt, target=target, explain=explain
    )
    return _attachment(file, fmt)


@router.get("/{job_id}/harmful")
def harmful_rows(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=explain.MAX_HARMFUL)] = 20,
    target: TargetQuery = None,
) -> dict[str, Any]:
    """The rows whose loss rose most when the model was nudged toward the target (theta_bas to
    theta_val): largest loss_after - loss_before first, with a text preview of each."""
    return explain.harmful_rows(
        session=session, tenant=tenant, job_id=job_id, limit=limit, target=target
    )


@router.get("/{job_id}/leaks")
def list_leaks(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    target: Annotated[int, Query(ge=0, lt=MAX_TARGETS)] = 0,
    limit: Annotated[int, Query(ge=1, le=leaks.MAX_LEAKS_PAGE)] = leaks.LEAKS_PAGE,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    excluded: bool | None = None,
) -> dict[str, Any]:
    """The pool rows the leakage check flagged for a target, in pool order: the matched row
    (source validation|decontaminate, dataset, index, a text preview), the similarity, the kind
    (exact|near) and whether the row is excluded from selection; paged by `next_cursor`."""
    return leaks.list_leaks(
        session=session,
        tenant=tenant,
        job_id=job_id,
        target=target,
        limit=limit,
        cursor=cursor,
        excluded=excluded,
    )


@router.get("/{job_id}/subset")
def download_subset(
    job_id: str, session: SessionDep, tenant: TenantDep, query: SelectionQueryDep
) -> StreamingResponse:
    """The selected pool rows themselves, in pool order, as `format` whatever the pool's file
    format (JSONL, CSV or Parquet): each row as the engine reads it (see the README)."""
    file = download.subset_file(session=session, tenant=tenant, job_id=job_id, query=query)
    return _attachment(file, query.fmt)


@router.post("/{job_id}/selections", status_code=202, response_model=SelectionRead)
def create_selection(
    job_id: str, body: SelectionCreate, session: SessionDep, tenant: TenantDep
) -> SelectionRead:
    """A new selection from the stored scores (another budget, strategy or binning) of one target
    (`target`, default 0); no GPU."""
    row = selections.request_selection(session=session, tenant=tenant, job_id=job_id, body=body)
    session.commit()
    selections.enqueue(row)  # after the commit: the worker always finds the row
    return SelectionRead.model_validate(row)


@router.get("/{job_id}/selections", response_model=list[SelectionRead])
def list_selections(job_id: str, session: SessionDep, tenant: TenantDep) -> list[SelectionRead]:
    rows = selections.list_selections(session=session, tenant=tenant, job_id=job_id)
    return [SelectionRead.model_validate(r) for r in rows]


@router.get("/{job_id}/selections/{selection_id}", response_model=SelectionRead)
def get_selection(
    job_id: str, selection_id: str, session: SessionDep, tenant: TenantDep
) -> SelectionRead:
    row = selections.get_selection(
        session=session, tenant=tenant, job_id=job_id, selection_id=selection_id
    )
    return SelectionRead.model_validate(row)
