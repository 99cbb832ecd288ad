"""Why rows were picked, and which rows the target hurt: the explanation columns of the scores and
selection downloads, the harmful rows (the largest loss increase from theta_bas to theta_val), and
text previews of pool rows."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.artifacts import dataset_available
from app.core.errors import Conflict
from app.core.models import Dataset, Job, Tenant
from app.jobs.service import get_job
from app.results.pool_rows import (
    PoolFile,
    csv_cells,
    csv_record,
    jsonl_lines,
    parquet_batches,
    parquet_records,
    wanted_rows,
)
from app.results.scores import RowExplanations, read_explanations, read_scores
from app.results.selections import StoredSelection, load_selection
from tov_formats.text import row_text

PREVIEW_CHARS = 240
MAX_HARMFUL = 1000


def score_columns(explained: RowExplanations) -> dict[str, np.ndarray]:
    """The explanation columns of the scores download (null where there is none)."""
    return {
        "loss_before": explained.loss_before,
        "loss_after": explained.loss_after,
        "bin": _nullable_ints(explained.bins),
        "bin_rank": _nullable_ints(explained.bin_ranks),
    }


def _nullable_ints(values: np.ndarray) -> Any:
    """-1 as null, as an Arrow-friendly masked int column (a float column would print 3.0)."""
    return np.ma.masked_array(values.astype(np.int64), mask=values < 0)


def reasons(chosen: StoredSelection) -> list[str]:
    """Why each selected row was picked: "score: rank R of Q in length bin B", or
    "random" / "diverse" (the strategy's non-score part)."""
    if chosen.bins is None or chosen.bin_ranks is None or chosen.bin_quotas is None:
        return [str(v) for v in chosen.sources().tolist()]
    rows = zip(
        chosen.from_random.tolist(),
        chosen.bins.tolist(),
        chosen.bin_ranks.tolist(),
        chosen.bin_quotas.tolist(),
        strict=True,
    )
    return [
        chosen.filler if r or b < 0 else f"score: rank {k} of {q} in length bin {b}"
        for r, b, k, q in rows
    ]


def selection_columns(
    chosen: StoredSelection, explained: RowExplanations
) -> dict[str, np.ndarray | list[Any]]:
    """The explanation columns of the selection download: why each row was picked (reason, bin,
    rank in bin, the bin's quota of score picks) and its losses before and after."""
    none = np.full(len(chosen.indices), -1, dtype=np.int32)
    return {
        "reason": reasons(chosen),
        "bin": _nullable_ints(none if chosen.bins is None else chosen.bins),
        "bin_rank": _nullable_ints(none if chosen.bin_ranks is None else chosen.bin_ranks),
        "bin_quota": _nullable_ints(none if chosen.bin_quotas is None else chosen.bin_quotas),
        "loss_before": _take(explained.loss_before, chosen.indices),
        "loss_after": _take(explained.loss_after, chosen.indices),
    }


def _take(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    if len(values) == 0:  # no scores stored (the random baseline)
        return np.full(len(indices), np.nan, dtype=np.float32)
    return values[indices]


def preview(record: Any) -> str:
    """A pool row's text, cut to PREVIEW_CHARS (its JSON when it announces no format)."""
    try:
        text = row_text(record) if isinstance(record, dict) else json.dumps(record)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = json.dumps(record, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def pool_previews(session: Session, job: Job, indices: np.ndarray) -> dict[int, str]:
    """Previews of the given pool rows (one streamed pass over the pool file)."""
    pool = session.get(Dataset, job.pool_dataset_id)
    if pool is None or not dataset_available(pool.uri):
        raise Conflict(f"The pool of job '{job.id}' is no longer available.")
    file = PoolFile(pool.uri, pool.file_format, list(pool.columns or []))
    wanted = wanted_rows(indices)
    records: list[Any]
    if file.file_format == "parquet":
        batches = parquet_batches(file.path, wanted)
        records = [row for batch in batches for row in parquet_records(batch)]
    elif file.file_format == "csv":
        cells = csv_cells(file.path, wanted)
        header = next(cells, None)
        records = [] if header is None else [csv_record(header, row) for row in cells]
    else:
        records = [json.loads(line) for line in jsonl_lines(file.path, wanted)]
    return {i: preview(r) for i, r in zip(wanted.tolist(), records, strict=False)}


def _num(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def _int(value: int) -> int | None:
    return None if value < 0 else int(value)


def harmful_rows(
    *, session: Session, tenant: Tenant, job_id: str, limit: int, target: int | None
) -> dict[str, Any]:
    """The rows whose loss rose most from theta_bas to theta_val (the model nudged toward the
    target): loss_after - loss_before largest first (ties by index), only rows whose loss rose,
    at most `limit`, each with a text preview of the pool row and whether it was selected."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    target = target or 0
    chosen = load_selection(session=session, job=job, selection_id=None, target=target)
    scores, lengths = read_scores(session=session, job_id=job.id, target=target)
    explained = read_explanations(session=session, job_id=job.id, target=target)
    rise = explained.loss_after.astype(np.float64) - explained.loss_before.astype(np.float64)
    rose = np.flatnonzero(np.isfinite(rise) & (rise > 0))
    order = rose[np.lexsort((rose, -rise[rose]))][:limit]
    previews = pool_previews(session, job, order) if len(order) else {}
    picked = set(chosen.indices.tolist())
    items = [
        {
            "index": int(i),
            "loss_before": _num(explained.loss_before[i]),
            "loss_after": _num(explained.loss_after[i]),
            "loss_increase": _num(rise[i]),
            "score": _num(scores[i]),
            "length": int(lengths[i]),
            "bin": _int(int(explained.bins[i])),
            "bin_rank": _int(int(explained.bin_ranks[i])),
            "selected": int(i) in picked,
            "preview": previews.get(int(i), ""),
        }
        for i in order.tolist()
    ]
    return {
        "job_id": job.id,
        "target": target,
        "explained": bool(np.isfinite(explained.loss_before).any()),
        "rows_with_loss_increase": len(rose),
        "items": items,
    }
