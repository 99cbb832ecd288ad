"""The dashboard's work: page templates, and the two JSON summaries behind its charts (score
histograms and length bins from the stored scores; a selection's composition by a pool column)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter, OrderedDict
from html import escape
from pathlib import Path
from string import Template
from threading import Lock
from typing import IO, Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.artifacts import dataset_available, open_dataset
from app.core.errors import Conflict, InvalidInput
from app.core.models import Dataset, Tenant
from app.jobs.service import get_job
from app.results.scores import read_scores
from app.results.selections import StoredSelection, load_selection

UI_DIR = Path(__file__).resolve().parent
COLUMN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
HISTOGRAM_BINS = 30
MAX_CATEGORIES = 24


def render_page(*, page: str, title: str, job_id: str, base: str) -> str:
    """The layout template around the page's body; every value put in is HTML-escaped."""
    layout = Template((UI_DIR / "templates" / "layout.html").read_text())
    body = (UI_DIR / "templates" / f"{page}.html").read_text()
    return layout.substitute(
        title=escape(title), page=page, job_id=escape(job_id), base=escape(base), body=body
    )


def _num(value: float | np.floating[Any]) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _length_bins(
    scores: np.ndarray, lengths: np.ndarray, chosen: StoredSelection, num_bins: int
) -> list[dict[str, Any]]:
    """Equal-count length bins over the scored rows (as the selection makes them; ties by
    index), each with its score quantiles and how many selected rows fall in it (an unscored
    selected row counts in the bin its length falls in)."""
    scored = np.flatnonzero(np.isfinite(scores))
    candidates = scored if len(scored) else np.arange(len(scores))
    ordered = candidates[np.lexsort((candidates, lengths[candidates]))]
    bin_of = np.full(len(scores), -1, dtype=np.int64)
    parts = [p for p in np.array_split(ordered, max(1, num_bins)) if len(p)]
    for b, part in enumerate(parts):
        bin_of[part] = b
    # Unscored rows (the base subset, which the random half may hold) go by their length.
    upper = np.array([lengths[p[-1]] for p in parts])
    outside = np.flatnonzero(bin_of < 0)
    bin_of[outside] = np.minimum(np.searchsorted(upper, lengths[outside]), len(parts) - 1)
    picked = bin_of[chosen.indices] if len(chosen.indices) else np.zeros(0, dtype=np.int64)
    out = []
    for b, part in enumerate(parts):
        values = scores[part]
        values = values[np.isfinite(values)]
        quantiles = (
            np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(values) else [math.nan] * 5
        )
        in_bin = picked == b
        out.append(
            {
                "min_length": int(lengths[part].min()),
                "max_length": int(lengths[part].max()),
                "count": len(part),
                "mean": _num(values.mean()) if len(values) else None,
                "p5": _num(quantiles[0]),
                "q1": _num(quantiles[1]),
                "median": _num(quantiles[2]),
                "q3": _num(quantiles[3]),
                "p95": _num(quantiles[4]),
                "selected_score": int((in_bin & ~chosen.from_random).sum()),
                "selected_random": int((in_bin & chosen.from_random).sum()),
            }
        )
    return out


def _histogram(scores: np.ndarray, chosen: StoredSelection) -> dict[str, Any] | None:
    finite = scores[np.isfinite(scores)]
    if not len(finite):
        return None
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    picked = scores[chosen.indices]

    def counts(values: np.ndarray) -> list[int]:
        values = values[np.isfinite(values)]
        return [int(c) for c in np.histogram(values, bins=edges)[0]]

    return {
        "edges": [_num(e) for e in edges],
        "pool": counts(finite),
        "selected_score": counts(picked[~chosen.from_random]),
        "selected_random": counts(picked[chosen.from_random]),
    }


def job_summary(
    *, session: Session, tenant: Tenant, job_id: str, selection_id: str | None
) -> dict[str, Any]:
    """Score histogram (pool vs selected) and score quantiles by length bin, for the charts."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    chosen = load_selection(session=session, job=job, selection_id=selection_id)
    scores, lengths = read_scores(session=session, job_id=job.id, target=chosen.target)
    if len(scores) == 0:
        raise Conflict(f"Job '{job.id}' stored no scores.")
    num_bins = int((job.params or {}).get("selection", {}).get("num_bins") or 10)
    return {
        "job_id": job.id,
        "selection_id": chosen.id,
        "rows": len(scores),
        "scored": int(np.isfinite(scores).sum()),
        "selected": len(chosen.indices),
        "selected_random": int(chosen.from_random.sum()),
        "num_bins": num_bins,
        "histogram": _histogram(scores, chosen),
        "length_bins": _length_bins(scores, lengths, chosen, num_bins),
    }


class _Cache:
    """A small LRU of per-row pool values: a succeeded job's pool file does not change."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, str, str], list[str]] = OrderedDict()
        self.lock = Lock()

    def get(self, key: tuple[str, str, str]) -> list[str] | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            return None

    def put(self, key: tuple[str, str, str], value: list[str]) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_column_cache = _Cache()


def _label(value: Any) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)[:80]


def _column_values(handle: IO[bytes], file_format: str, column: str) -> list[Any]:
    """One column of every row, numbered as the engine numbers rows (app/results/pool_rows)."""
    if file_format == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(handle, columns=[column]).column(column).to_pylist())
    if file_format == "csv":  # the csv module keeps a quoted newline inside its cell
        reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
        return [row.get(column) for row in reader]
    values = []
    for line in handle:
        if not line.strip():
            break  # blank lines are allowed only at the end
        row = json.loads(line)
        values.append(row.get(column) if isinstance(row, dict) else None)
    return values


def read_pool_column(dataset: Dataset, column: str) -> list[str]:
    """The `column` value of every pool row, in pool order (a row's index is its line's)."""
    key = (dataset.id, dataset.sha256, column)
    cached = _column_cache.get(key)
    if cached is not None:
        return cached
    if not dataset_available(dataset.uri):
        raise Conflict(f"The file of dataset '{dataset.id}' is no longer available.")
    with open_dataset(dataset.uri) as handle:
        values = [_label(value) for value in _column_values(handle, dataset.file_format, column)]
    _column_cache.put(key, values)
    return values


def _shares(counter: Counter[str], keep: list[str]) -> dict[str, int]:
    out = {name: counter.get(name, 0) for name in keep}
    other = sum(n for name, n in counter.items() if name not in out)
    if other:
        out["(other)"] = other
    return out


def job_composition(
    *, session: Session, tenant: Tenant, job_id: str, column: str, selection_id: str | None
) -> dict[str, Any]:
    """How the selection splits over the pool's `column` (default `source`) against the pool.

    ``present`` is false when the pool has no such column; counts are per category, the
    largest ``MAX_CATEGORIES`` kept and the rest summed as ``(other)``.
    """
    if not COLUMN.match(column):
        raise InvalidInput("column: letters, digits, '_', '.', '-' only.")
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    chosen = load_selection(session=session, job=job, selection_id=selection_id)
    pool = session.get(Dataset, job.pool_dataset_id)
    if pool is None:
        raise Conflict(f"The pool of job '{job.id}' is no longer available.")
    if column not in (pool.columns or []):
        return {"job_id": job.id, "column": column, "present": False, "columns": pool.columns}
    values = read_pool_column(pool, column)
    pool_counts = Counter(values)
    keep = [name for name, _ in pool_counts.most_common(MAX_CATEGORIES)]
    pairs = [
        (values[i], bool(r))
        for i, r in zip(chosen.indices.tolist(), chosen.from_random.tolist(), strict=True)
        if 0 <= i < len(values)
    ]
    picked = [v for v, _ in pairs]
    by_score = [v for v, from_random in pairs if not from_random]
    return {
        "job_id": job.id,
        "selection_id": chosen.id,
        "column": column,
        "present": True,
        "pool_rows": len(values),
        "selected_rows": len(picked),
        "pool": _shares(pool_counts, keep),
        "selection": _shares(Counter(picked), keep),
        "selection_by_score": _shares(Counter(by_score), keep),
    }
