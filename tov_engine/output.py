"""Writing result tables (selection, scores) as JSONL, Parquet or CSV, chosen by file extension."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.selection import Selection

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


def selection_rows(selection: Selection) -> list[dict[str, Any]]:
    """{"index", "score", "source"} per selected row, in selection order."""
    return [
        {"index": int(i), "score": float(s), "source": src}
        for i, s, src in zip(selection.indices, selection.scores, selection.sources, strict=True)
    ]


def score_rows(scores: np.ndarray, lengths: np.ndarray) -> list[dict[str, Any]]:
    """{"index", "score", "length"} for every scored (non-NaN) pool row, in pool order."""
    return [
        {"index": int(i), "score": float(scores[i]), "length": int(lengths[i])}
        for i in np.flatnonzero(~np.isnan(scores))
    ]
