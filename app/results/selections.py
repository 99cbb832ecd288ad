"""Selections of a job's pool rows: stored index sets (the default one per target and those asked
for later from the stored scores: another budget, strategy or binning, no GPU)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.models import Job, JobStatus, Selection, Tenant, utcnow
from app.core.queue import publish_reselect
from app.jobs.service import check_target, get_job
from app.results.schemas import SelectionCreate


@dataclass(frozen=True)
class StoredSelection:
    """A ready selection read back as numpy: which pool rows, their scores, and which half
    (`from_random`: the non-score part, random or diverse by the strategy)."""

    id: str
    target: int
    indices: np.ndarray  # (n,) int64
    scores: np.ndarray  # (n,) float32
    from_random: np.ndarray  # (n,) bool
    # Why each row was picked (None for selections stored before migration 0010): a score pick's
    # length bin, its rank by score within the bin, the bin's score picks; -1 for random picks.
    bins: np.ndarray | None = None  # (n,) int32
    bin_ranks: np.ndarray | None = None  # (n,) int32
    bin_quotas: np.ndarray | None = None  # (n,) int32
    strategy: str = "score+random"

    @property
    def filler(self) -> str:
        """What the non-score picks are called: "diverse" (score+diverse) or "random"."""
        return "diverse" if self.strategy == "score+diverse" else "random"

    def sources(self) -> np.ndarray:
        """(n,) "score" or the filler's name per selected row."""
        return np.where(self.from_random, self.filler, "score")


def places_bytes(values: np.ndarray | None) -> bytes | None:
    """A selection's bins, ranks or quotas as stored (little-endian int32), or None."""
    return None if values is None else np.asarray(values, dtype="<i4").tobytes()


def _places(stored: bytes | None) -> np.ndarray | None:
    return None if stored is None else np.frombuffer(stored, dtype="<i4").astype(np.int32)


def add_selection(
    *,
    session: Session,
    job_id: str,
    indices: np.ndarray,
    scores: np.ndarray,
    from_random: np.ndarray,
    budget: float,
    strategy: str,
    num_bins: int,
    seed: int,
    is_default: bool,
    target: int = 0,
    min_per_bin: int = 0,
    places: tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None] = (None, None, None),
) -> Selection:
    """Add a ready selection of one target of the job (the worker's default one, or a reselect);
    `places`: each row's (bin, rank in bin, bin quota), the reasons it was picked."""
    row = Selection(
        job_id=job_id,
        target=target,
        budget=budget,
        strategy=strategy,
        num_bins=num_bins,
        min_per_bin=min_per_bin,
        seed=seed,
        size=len(indices),
        indices=np.asarray(indices, dtype="<i8").tobytes(),
        scores=np.asarray(scores, dtype="<f4").tobytes(),
        from_random=np.asarray(from_random, dtype=np.uint8).tobytes(),
        bins=places_bytes(places[0]),
        bin_ranks=places_bytes(places[1]),
        bin_quotas=places_bytes(places[2]),
        is_default=is_default,
    )
    session.add(row)
    return row


def load_selection(
    *, session: Session, job: Job, selection_id: str | None, target: int | None = None
) -> StoredSelection:
    """The default selection of a target of the job (`target` None: 0), or the one named (whose
    target must then match `target` when given); only for a succeeded job."""
    if target is not None:
        check_target(job, target)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Job '{job.id}' is {job.status}; results exist once it has succeeded.")
    query = select(Selection).where(Selection.job_id == job.id)
    query = (
        query.where(Selection.id == selection_id)
        if selection_id
        else query.where(Selection.is_default.is_(True), Selection.target == (target or 0))
    )
    row = session.scalar(query)
    if row is None:
        if selection_id:
            raise NotFound(f"Selection '{selection_id}' does not exist for job '{job.id}'.")
        raise NotFound(f"Job '{job.id}' has no default selection for target {target or 0}.")
    if target is not None and row.target != target:
        raise NotFound(
            f"target: selection '{row.id}' is for target {row.target}, not target {target}; "
            "leave `target` out or make it match."
        )
    if row.status != "ready":
        raise Conflict(
            f"Selection '{row.id}' is {row.status}"
            + (f": {row.error}" if row.error else "; retry shortly.")
        )
    return StoredSelection(
        id=row.id,
        target=row.target,
        indices=np.frombuffer(row.indices, dtype="<i8").astype(np.int64),
        scores=np.frombuffer(row.scores, dtype="<f4").astype(np.float32),
        from_random=np.frombuffer(row.from_random, dtype=np.uint8).astype(bool),
        bins=_places(row.bins),
        bin_ranks=_places(row.bin_ranks),
        bin_quotas=_places(row.bin_quotas),
        strategy=row.strategy,
    )


def request_selection(
    *, session: Session, tenant: Tenant, job_id: str, body: SelectionCreate
) -> Selection:
    """A pending selection row; a worker on the select queue fills it in."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    check_target(job, body.target)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Job '{job.id}' is {job.status}; new selections need its scores.")
    if job.method == "random":
        raise Conflict(f"Job '{job.id}' used the random method and stored no scores.")
    if body.strategy == "score+diverse":
        reason = (
            "'score+diverse' draws from the pool's embeddings, which a re-selection from stored "
            "scores does not have; create a job with this strategy instead (on the same pool the "
            "worker's pool cache makes the embeddings free)"
        )
        raise InvalidInput(f"strategy: {reason}", errors=[{"field": "strategy", "reason": reason}])
    if body.budget >= 1 and body.budget > job.rows_total:
        raise Conflict(
            f"selection.budget {int(body.budget)} exceeds the pool's {job.rows_total} rows."
        )
    row = Selection(
        job_id=job.id,
        target=body.target,
        budget=body.budget,
        strategy=body.strategy,
        num_bins=body.num_bins,
        min_per_bin=body.min_per_bin,
        seed=job.seed if body.seed is None else body.seed,
        size=0,
        indices=b"",
        scores=b"",
        from_random=b"",
        is_default=False,
        status="pending",
        published_at=utcnow(),  # the route sends it right after the commit
    )
    session.add(row)
    session.flush()
    return row


def list_selections(*, session: Session, tenant: Tenant, job_id: str) -> list[Selection]:
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    return list(
        session.scalars(
            select(Selection)
            .where(Selection.job_id == job.id)
            .order_by(Selection.target, Selection.created_at, Selection.id)
        )
    )


def get_selection(*, session: Session, tenant: Tenant, job_id: str, selection_id: str) -> Selection:
    job: Job = get_job(session=session, tenant=tenant, job_id=job_id)
    row = session.scalar(
        select(Selection).where(Selection.job_id == job.id, Selection.id == selection_id)
    )
    if row is None:
        raise NotFound(f"Selection '{selection_id}' does not exist for job '{job.id}'.")
    return row


def enqueue(row: Selection) -> None:
    """Send a committed pending selection to the select queue."""
    publish_reselect(row.id)
