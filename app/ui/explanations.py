"""The dashboard's table of selected rows with their explanations: why each row was picked (its
length bin, its rank by score there within the bin's quota, or a random draw), its losses before
and after, and a text preview of the pool row."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.models import Tenant
from app.jobs.service import get_job
from app.results.explain import pool_previews, reasons
from app.results.scores import read_explanations
from app.results.selections import load_selection

MAX_ROWS = 500


def _num(value: float) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _place(values: np.ndarray | None, k: int) -> int | None:
    return None if values is None or values[k] < 0 else int(values[k])


def selected_rows(
    *, session: Session, tenant: Tenant, job_id: str, limit: int, selection_id: str | None
) -> dict[str, Any]:
    """The first `limit` selected rows in selection order (score picks best first, then the
    random ones) with their explanations and previews; `total` counts them all."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    chosen = load_selection(session=session, job=job, selection_id=selection_id)
    explained = read_explanations(session=session, job_id=job.id, target=chosen.target)
    shown = chosen.indices[:limit]
    previews = pool_previews(session, job, shown) if len(shown) else {}
    why = reasons(chosen)
    has_losses = len(explained.loss_before) > 0
    rows = []
    for k, index in enumerate(shown.tolist()):
        before = _num(explained.loss_before[index]) if has_losses else None
        after = _num(explained.loss_after[index]) if has_losses else None
        rows.append(
            {
                "index": index,
                "source": chosen.filler if chosen.from_random[k] else "score",
                "reason": why[k],
                "bin": _place(chosen.bins, k),
                "bin_rank": _place(chosen.bin_ranks, k),
                "bin_quota": _place(chosen.bin_quotas, k),
                "score": _num(chosen.scores[k]),
                "loss_before": before,
                "loss_after": after,
                "loss_change": None if before is None or after is None else _num(after - before),
                "preview": previews.get(index, ""),
            }
        )
    return {
        "job_id": job.id,
        "selection_id": chosen.id,
        "total": len(chosen.indices),
        "by_score": int((~chosen.from_random).sum()),
        "explained": chosen.bins is not None,
        "rows": rows,
    }
