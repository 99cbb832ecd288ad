"""Downloads of a succeeded job's results: its selection, every row's score, the selected rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.artifacts import dataset_available
from app.core.errors import Conflict
from app.core.models import Dataset, Job, Tenant
from app.jobs.service import get_job
from app.results.explain import score_columns, selection_columns
from app.results.export import ExportFormat, iter_export
from app.results.pool_rows import PoolFile
from app.results.scores import read_explanations, read_scores
from app.results.selections import StoredSelection, load_selection
from app.results.subset import iter_subset


@dataclass(frozen=True)
class Download:
    """A file to stream: its name without the extension, and its bytes in pieces."""

    name: str
    chunks: Iterator[bytes]


@dataclass(frozen=True)
class SelectionQuery:
    """Which selection to download, and as what: the default one of `target` (None: 0) or the
    one named by `selection_id`."""

    fmt: ExportFormat
    selection_id: str | None
    target: int | None
    explain: bool = False  # the selection download: why each row was picked (explain.py)


def _file_name(job_id: str, target: int, what: str) -> str:
    """The download's file name; a multi-target job's later targets are named."""
    return f"{job_id}-{what}" if target == 0 else f"{job_id}-target{target}-{what}"


def _load(session: Session, job: Job, query: SelectionQuery) -> StoredSelection:
    return load_selection(
        session=session, job=job, selection_id=query.selection_id, target=query.target
    )


def selection_file(
    *, session: Session, tenant: Tenant, job_id: str, query: SelectionQuery
) -> Download:
    """One row per selected pool row: index, score, source (`score`, or `random` or
    `diverse` by the strategy); with
    `query.explain` also why it was picked and its losses (explain.selection_columns)."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    chosen = _load(session, job, query)
    columns: dict[str, Any] = {
        "index": chosen.indices,
        "score": chosen.scores,
        "source": chosen.sources(),
    }
    if query.explain:
        explained = read_explanations(session=session, job_id=job.id, target=chosen.target)
        columns.update(selection_columns(chosen, explained))
    return Download(_file_name(job.id, chosen.target, "selection"), iter_export(columns, query.fmt))


def scores_file(
    *,
    session: Session,
    tenant: Tenant,
    job_id: str,
    fmt: ExportFormat,
    target: int | None,
    explain: bool = False,
) -> Download:
    """Every pool row's score for one target (null for the unscored base subset), its length;
    with `explain` also its losses before and after, length bin and rank in it."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    target = target or 0
    # Checks the target exists and the job succeeded.
    load_selection(session=session, job=job, selection_id=None, target=target)
    scores, lengths = read_scores(session=session, job_id=job.id, target=target)
    columns: dict[str, Any] = {"index": np.arange(len(scores)), "score": scores, "length": lengths}
    if explain:
        explained = read_explanations(session=session, job_id=job.id, target=target)
        columns.update(score_columns(explained))
    return Download(_file_name(job.id, target, "scores"), iter_export(columns, fmt))


def subset_file(
    *, session: Session, tenant: Tenant, job_id: str, query: SelectionQuery
) -> Download:
    """The selected pool rows themselves, in pool order, read by the pool's file format and
    written as `query.fmt` (what a row is in each: `subset.iter_subset`)."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    chosen = _load(session, job, query)
    pool = session.get(Dataset, job.pool_dataset_id)
    if pool is None or not dataset_available(pool.uri):
        raise Conflict(f"The pool of job '{job.id}' is no longer available.")
    name = _file_name(job.id, chosen.target, "subset")
    file = PoolFile(pool.uri, pool.file_format, list(pool.columns or []))
    return Download(name, iter_subset(file, chosen.indices, query.fmt))
