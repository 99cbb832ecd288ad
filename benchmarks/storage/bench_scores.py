"""Score storage: write/read throughput and bytes per score for 1M and 10M scores, a new
selection over 10M stored scores, and download throughput, against a one-row-per-score baseline
measured in the same run.

    .venv/bin/python -m benchmarks.storage.bench_scores [--sizes 1000000 10000000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.core.models import Dataset, Job, ScoreChunk, Tenant
from app.results.export import iter_export
from app.results.scores import read_base_indices, read_scores, write_scores
from benchmarks.common import throwaway_database, write_result
from tov_engine import SelectionConfig, select

console = Console(width=150)
BASELINE_ROWS = 200_000


def make_job(session: Session, rows: int) -> str:
    tenant = Tenant(name=f"bench-{rows}")
    session.add(tenant)
    session.flush()
    dataset = Dataset(
        tenant_id=tenant.id,
        name="pool",
        uri="/dev/null",
        file_format="jsonl",
        row_format="text",
        rows=rows,
        size_bytes=0,
        sha256="0" * 64,
    )
    session.add(dataset)
    session.flush()
    job = Job(
        tenant_id=tenant.id,
        request_hash="0" * 64,
        pool_dataset_id=dataset.id,
        validation_dataset_id=dataset.id,
        model="m",
        task="causal_lm",
        method="tov",
    )
    session.add(job)
    session.commit()
    return job.id


def baseline_rows_per_second(url: str) -> float:
    """The naive layout: one row per score, executemany (RELIABILITY.md's first row)."""
    engine = create_engine(url)
    values = [{"i": i, "s": float(i % 997) / 997} for i in range(BASELINE_ROWS)]
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE naive_score (job_id text, idx bigint, score real, "
                "PRIMARY KEY (job_id, idx))"
            )
        )
        started = time.perf_counter()
        conn.execute(text("INSERT INTO naive_score VALUES ('j', :i, :s)"), values)
        seconds = time.perf_counter() - started
    engine.dispose()
    return BASELINE_ROWS / seconds


def measure(url: str, rows: int, rng: np.random.Generator) -> dict[str, Any]:
    engine = create_engine(url)
    scores = rng.standard_normal(rows).astype(np.float32)
    lengths = rng.integers(5, 500, rows).astype(np.int32)
    base = np.sort(rng.choice(rows, rows // 20, replace=False))
    scores[base] = np.nan
    with Session(engine) as session:
        job_id = make_job(session, rows)
        started = time.perf_counter()
        write_scores(
            session=session, job_id=job_id, scores=scores, lengths=lengths, base_indices=base
        )
        session.commit()
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        got, got_lengths = read_scores(session=session, job_id=job_id)
        got_base = read_base_indices(session=session, job_id=job_id)
        read_s = time.perf_counter() - started
        assert np.array_equal(got, scores, equal_nan=True) and np.array_equal(got_base, base)
        size = session.scalar(text("SELECT pg_total_relation_size('score_chunk')")) or 0
        session.query(ScoreChunk).filter(ScoreChunk.job_id == job_id).delete()
        session.commit()
    engine.dispose()
    started = time.perf_counter()
    chosen = select(
        scores=got,
        lengths=got_lengths,
        base_indices=got_base,
        config=SelectionConfig(budget=0.05),
        seed=0,
    )
    select_s = time.perf_counter() - started
    cols = {"index": np.arange(rows), "score": got, "length": got_lengths}  # the /scores file
    download = {}
    for fmt in ("jsonl", "csv", "parquet"):
        started = time.perf_counter()
        size_bytes = sum(len(piece) for piece in iter_export(cols, fmt))  # type: ignore[arg-type]
        download[fmt] = size_bytes / 1e6 / (time.perf_counter() - started)
    return {
        "rows": rows,
        "write_scores_per_s": rows / write_s,
        "read_scores_per_s": rows / read_s,
        "bytes_per_score": size / rows,
        "select_seconds": select_s,
        "selected": len(chosen.indices),
        "download_mb_per_s": download,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with throwaway_database() as url:
        baseline = baseline_rows_per_second(url)
        results = [measure(url, rows, rng) for rows in args.sizes]
    table = Table(title=f"Score storage (baseline: one row per score, {baseline:,.0f} rows/s)")
    for column in (
        "rows",
        "write/s",
        "x baseline",
        "read/s",
        "bytes/score",
        "select s",
        "download MB/s (jsonl/csv/parquet)",
    ):
        table.add_column(column, justify="right")
    for r in results:
        d = r["download_mb_per_s"]
        table.add_row(
            f"{r['rows']:,}",
            f"{r['write_scores_per_s']:,.0f}",
            f"{r['write_scores_per_s'] / baseline:.1f}",
            f"{r['read_scores_per_s']:,.0f}",
            f"{r['bytes_per_score']:.2f}",
            f"{r['select_seconds']:.2f}",
            f"{d['jsonl']:.0f} / {d['csv']:.0f} / {d['parquet']:.0f}",
        )
    console.print(table)
    path = write_result("storage", {"baseline_rows_per_s": baseline, "sizes": results})
    console.print(f"written to {path}")


if __name__ == "__main__":
    main()
