"""Writing result tables (selection, scores) as JSONL, Parquet or CSV, chosen by file extension."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.selection import Binning, Selection

WRITERS = (".jsonl", ".parquet", ".csv")


def _clean(value: Any) -> Any:
    # JSON has no NaN: an unscored row's score is null.
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_table(path: str | Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write rows to `path`; the format follows the extension (.jsonl, .parquet, .csv).

    Args:
        path: output file. rows: dicts with the given columns. columns: column order.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in WRITERS:
        raise ValueError(f"output {out} must end in one of {WRITERS}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".jsonl":
        with out.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({c: _clean(row[c]) for c in columns}) + "\n")
    elif suffix == ".csv":
        with out.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({c: _clean(row[c]) for c in columns} for row in rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [_clean(r[c]) for r in rows] for c in columns})
        pq.write_table(table, out)


SELECTION_COLUMNS = ["index", "score", "source", "reason", "bin", "bin_rank", "bin_quota"]
SCORE_COLUMNS = ["index", "score", "length", "loss_before", "loss_after", "bin", "bin_rank"]


def reason(source: str, bin_: int, rank: int, quota: int) -> str:
    """Why a row was picked: "score: rank R of Q in length bin B" (its rank by score within its
    length bin, and the score picks that bin got), or "random"."""
    if source == "score" and bin_ >= 0:
        return f"score: rank {rank} of {quota} in length bin {bin_}"
    return source


def _places(selection: Selection) -> tuple[list[int], list[int], list[int]]:
    n = len(selection.indices)
    missing = [-1] * n
    return (
        missing if selection.bins is None else selection.bins.tolist(),
        missing if selection.bin_ranks is None else selection.bin_ranks.tolist(),
        missing if selection.bin_quotas is None else selection.bin_quotas.tolist(),
    )


def _opt(value: int) -> int | None:
    return None if value < 0 else value


def selection_rows(selection: Selection) -> list[dict[str, Any]]:
    """SELECTION_COLUMNS per selected row, in selection order (bin, rank and quota null for a
    random pick)."""
    bins, ranks, quotas = _places(selection)
    indices, scores = selection.indices.tolist(), selection.scores.tolist()
    rows = zip(indices, scores, selection.sources, bins, ranks, quotas, strict=True)
    return [
        {
            "index": i,
            "score": s,
            "source": src,
            "reason": reason(src, b, r, q),
            "bin": _opt(b),
            "bin_rank": _opt(r),
            "bin_quota": _opt(q),
        }
        for i, s, src, b, r, q in rows
    ]


def score_rows(
    scores: np.ndarray,
    lengths: np.ndarray,
    loss_before: np.ndarray | None = None,
    loss_after: np.ndarray | None = None,
    binning: Binning | None = None,
) -> list[dict[str, Any]]:
    """SCORE_COLUMNS for every scored (non-NaN) pool row, in pool order; a column the method
    does not produce (losses outside ToV) is null."""
    where = np.flatnonzero(~np.isnan(scores))
    nan = np.full(len(scores), np.nan, dtype=np.float32)
    none = np.full(len(scores), -1, dtype=np.int32)
    before = (nan if loss_before is None else loss_before)[where].tolist()
    after = (nan if loss_after is None else loss_after)[where].tolist()
    bins = (none if binning is None else binning.bins)[where].tolist()
    ranks = (none if binning is None else binning.ranks)[where].tolist()
    return [
        {
            "index": i,
            "score": s,
            "length": n,
            "loss_before": lb,
            "loss_after": la,
            "bin": _opt(b),
            "bin_rank": _opt(r),
        }
        for i, s, n, lb, la, b, r in zip(
            where.tolist(),
            scores[where].tolist(),
            lengths[where].tolist(),
            before,
            after,
            bins,
            ranks,
            strict=True,
        )
    ]
