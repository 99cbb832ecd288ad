"""The dashboard at /ui: HTML shells, static files, and two JSON summaries for its charts.

The pages hold no data: the browser keeps the API key in sessionStorage and its JS calls the API
(and the two summaries below) with ``Authorization: Bearer``. Nothing loads from outside: a
Content-Security-Policy of 'self' says so to the browser.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from app.core.auth import SessionDep, TenantDep
from app.core.errors import NotFound
from app.ui import explanations, service
from app.ui.service import UI_DIR

router = APIRouter(prefix="/ui", include_in_schema=False)

STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,60}$")


def _page(request: Request, *, page: str, title: str, job_id: str = "") -> HTMLResponse:
    base = request.scope.get("root_path", "").rstrip("/")
    html = service.render_page(page=page, title=title, job_id=job_id, base=base)
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    """The jobs list (live status) and the datasets."""
    return _page(request, page="jobs", title="Jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> HTMLResponse:
    """One job: progress, charts of its scores and selection, downloads, events."""
    if not JOB_ID.match(job_id):
        raise NotFound(f"Job '{job_id}' does not exist.")
    return _page(request, page="job", title=job_id, job_id=job_id)


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    if name not in STATIC:
        raise NotFound(f"'{name}' does not exist.")
    return FileResponse(
        UI_DIR / "static" / name,
        media_type=STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/api/jobs/{job_id}/summary")
def job_summary(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    selection_id: Annotated[str | None, Query(max_length=60)] = None,
) -> dict[str, Any]:
    """Score histogram (pool vs selected) and score quantiles by length bin, for the charts."""
    return service.job_summary(
        session=session, tenant=tenant, job_id=job_id, selection_id=selection_id
    )


@router.get("/api/jobs/{job_id}/composition")
def job_composition(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    column: Annotated[str, Query(max_length=100)] = "source",
    selection_id: Annotated[str | None, Query(max_length=60)] = None,
) -> dict[str, Any]:
    """How the selection splits over the pool's `column` (default `source`) against the pool."""
    return service.job_composition(
        session=session, tenant=tenant, job_id=job_id, column=column, selection_id=selection_id
    )


@router.get("/api/jobs/{job_id}/explanations")
def job_explanations(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=explanations.MAX_ROWS)] = 100,
    selection_id: Annotated[str | None, Query(max_length=60)] = None,
) -> dict[str, Any]:
    """The selected rows with why each was picked, their losses and a text preview."""
    return explanations.selected_rows(
        session=session, tenant=tenant, job_id=job_id, limit=limit, selection_id=selection_id
    )
