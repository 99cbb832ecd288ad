"""Every download of every pool format, checked value by value through the real API.

Pool format {jsonl, csv, parquet} x output format {jsonl, csv, parquet} x {/selection, /scores,
/subset}, for both targets of a multi-target job and a re-selection (`selection_id`). The pool has
quoted newlines (in its first row), unicode, nulls and extra columns. The expected subset rows are
what the engine itself reads from the stored pool file (`tov_engine.data.files.read_rows`).
Results are written directly (scores and selections as a worker publishes them); each pool
format's test lists every failing cell at once.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.app.test_datasets_api import auth

FORMATS = ("jsonl", "csv", "parquet")
CONTENT_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}


def _chat(user: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


# Extra columns: source (text with newlines, commas, quotes, unicode), note (nulls), rank (int),
# lang (in a JSONL pool only some rows have it; the first row does not).
ROWS: list[dict[str, Any]] = [
    {
        "messages": _chat("hello\nworld", 'first "quoted",\r\nline'),
        "source": "a,b\nc",
        "note": None,
        "rank": 0,
    },
    {"messages": _chat("¿Qué tal? 日本語 🙂", "très ✓"), "source": "ünï", "note": "", "rank": 1},
    {"messages": _chat("q2", "a2"), "source": 'say "hi"', "note": "kept", "rank": 2},
    {
        "messages": _chat("q3", "a3\n\nmore"),
        "source": "\u2028sep",
        "note": None,
        "rank": 3,
        "lang": "fr",
    },
    {"messages": _chat("q4", "a4"), "source": "plain", "note": "n4", "rank": 4},
    {"messages": _chat("q5", "Ω≈ç√"), "source": "x\r\ny", "note": None, "rank": 5, "lang": "日本"},
    {"messages": _chat("q6", "a6"), "source": "", "note": "n6", "rank": 6},
    {"messages": _chat("q7", "a7"), "source": "last", "note": None, "rank": 7},
]
COLUMNS = ["messages", "source", "note", "rank", "lang"]
N = len(ROWS)
BASE = np.array([0, 1], dtype=np.int64)  # the unscored base subset: NaN scores
# (target, selection): the stored indices (not in pool order) and which came from `random`.
PICKS = {
    "default-0": (0, [5, 0, 3], [0, 1, 0]),
    "default-1": (1, [7, 1, 2], [0, 0, 1]),
    "reselect-1": (1, [6, 4, 0, 1], [0, 0, 1, 1]),
}


def pool_bytes(fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ROWS).encode()
    if fmt == "parquet":
        buffer = io.BytesIO()
        table = pa.table({name: [row.get(name) for row in ROWS] for name in COLUMNS})
        pq.write_table(table, buffer, row_group_size=3)
        return buffer.getvalue()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in ROWS:
        messages = json.dumps(row["messages"], ensure_ascii=False)
        cells = [str(row[name]) if row.get(name) is not None else "" for name in COLUMNS[1:]]
        writer.writerow([messages, *cells])
    return out.getvalue().encode()


def upload(client: Any, key: str, body: bytes, name: str, fmt: str) -> str:
    response = client.post(
        f"/v1/datasets?name={name}",
        content=body,
        headers={**auth(key), "Content-Type": CONTENT_TYPES[fmt]},
    )
    assert response.status_code in (201, 202), response.text
    dataset: dict[str, Any] = response.json()
    deadline = time.monotonic() + 60
    while dataset.get("status") == "validating" and time.monotonic() < deadline:
        time.sleep(0.2)  # ingestion may run in the background: wait until the dataset is ready
        dataset = client.get(f"/v1/datasets/{dataset['id']}", headers=auth(key)).json()
    assert dataset.get("status", "ready") == "ready", dataset
    return str(dataset["id"])


def finish_job(job_id: str) -> tuple[dict[int, np.ndarray], dict[str, str]]:
    """Store per-target scores and the selections of PICKS; (scores by target, selection ids)."""
    from app.core.db import get_sessionmaker
    from app.core.models import Job
    from app.results.scores import write_scores
    from app.results.selections import add_selection

    scores: dict[int, np.ndarray] = {}
    ids: dict[str, str] = {}
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.progress, job.rows_done = "succeeded", 1.0, N
        for target in (0, 1):
            values = np.linspace(0.25, 2.5, N).astype(np.float32) * (1 + target)
            values[BASE] = np.nan
            scores[target] = values
            lengths = np.arange(N, dtype=np.int32) + 10 * target
            write_scores(
                session=session,
                job_id=job_id,
                scores=values,
                lengths=lengths,
                base_indices=BASE,
                target=target,
            )
        for name, (target, picked, randoms) in PICKS.items():
            row = add_selection(
                session=session,
                job_id=job_id,
                indices=np.array(picked, dtype=np.int64),
                scores=scores[target][picked],
                from_random=np.array(randoms, dtype=np.uint8),
                budget=len(picked),
                strategy="score+random",
                num_bins=1,
                seed=0,
                is_default=name.startswith("default"),
                target=target,
            )
            session.flush()
            ids[name] = row.id
        session.commit()
    return scores, ids


def parse(content: bytes, fmt: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of a downloaded file."""
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(content))
        return table.column_names, table.to_pylist()
    text = content.decode("utf-8")
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        return list(reader.fieldnames or []), rows
    rows = [json.loads(line) for line in text.split("\n") if line]  # not splitlines: U+2028
    return (list(rows[0]) if rows else []), rows


def csv_value(cell: str, expected: Any) -> Any:
    """A CSV cell read back for comparison with `expected`: null and '' are both empty, other
    strings are themselves, anything else is JSON text."""
    if expected is None or isinstance(expected, str):
        return cell
    return json.loads(cell)


def csv_expected(value: Any) -> Any:
    return "" if value is None else value


def same_scores(got: Any, want: float) -> bool:
    if np.isnan(want):
        return got in (None, "")
    return got not in (None, "") and float(got) == pytest.approx(float(want), rel=1e-6)


def check_selection(
    rows: list[dict[str, Any]], indices: list[int], randoms: list[int], scores: np.ndarray
) -> None:
    assert [int(r["index"]) for r in rows] == indices
    assert [r["source"] for r in rows] == ["random" if x else "score" for x in randoms]
    assert all(same_scores(r["score"], scores[i]) for r, i in zip(rows, indices, strict=True))


def check_scores(rows: list[dict[str, Any]], scores: np.ndarray, target: int) -> None:
    assert [int(r["index"]) for r in rows] == list(range(N))
    assert [int(r["length"]) for r in rows] == [i + 10 * target for i in range(N)]
    assert all(same_scores(r["score"], scores[i]) for i, r in enumerate(rows))


def check_subset(
    columns: list[str], rows: list[dict[str, Any]], expected: list[dict[str, Any]], fmt: str
) -> None:
    """JSONL: each row exactly as the engine reads it (a key a JSONL row lacks stays absent);
    CSV and Parquet: every pool column in order, a missing value null (CSV: empty)."""
    assert len(rows) == len(expected), rows
    if fmt != "jsonl":
        assert columns == COLUMNS, columns
        expected = [{name: row.get(name) for name in COLUMNS} for row in expected]
    for got, want in zip(rows, expected, strict=True):
        if fmt == "csv":
            got = {k: csv_value(v, want[k]) for k, v in got.items()}
            want = {k: csv_expected(v) for k, v in want.items()}
        assert got == want


def run_matrix(client: Any, key: str, pool_format: str) -> list[str]:
    """Every cell for one pool format; the failing cells, each with why."""
    from app.core.db import get_sessionmaker
    from app.core.models import Dataset
    from tov_engine.data.files import read_rows

    h = auth(key)
    pool = upload(client, key, pool_bytes(pool_format), f"pool.{pool_format}", pool_format)
    targets = [upload(client, key, pool_bytes("jsonl"), f"val{t}.jsonl", "jsonl") for t in (0, 1)]
    created = client.post("/v1/jobs", json={"pool": pool, "targets": targets}, headers=h)
    assert created.status_code == 202, created.text
    job = created.json()["id"]
    scores, ids = finish_job(job)
    with get_sessionmaker()() as session:
        stored = session.get(Dataset, pool)
        assert stored is not None
        engine_rows = list(read_rows(Path(stored.uri)))  # what a job trains on
    assert len(engine_rows) == N

    failures: list[str] = []

    def cell(name: str, check: Callable[[], None]) -> None:
        try:
            check()
        except Exception as exc:  # a failing cell is recorded; the others still run
            failures.append(f"{pool_format} pool, {name}: {type(exc).__name__}: {exc}"[:300])

    def get(path: str, params: dict[str, Any], fmt: str) -> tuple[list[str], list[dict[str, Any]]]:
        response = client.get(f"/v1/jobs/{job}/{path}", params=params, headers=h)
        assert response.status_code == 200, response.text
        return parse(response.content, fmt)

    for out in FORMATS:
        for name, (target, picked, randoms) in PICKS.items():
            params: dict[str, Any] = {"format": out}
            if name == "reselect-1":
                params["selection_id"] = ids[name]
            elif target:
                params["target"] = target
            subset_rows = [engine_rows[i] for i in sorted(picked)]
            cell(
                f"{out} /selection {name}",
                lambda p=params, i=picked, r=randoms, t=target, o=out: check_selection(
                    get("selection", p, o)[1], i, r, scores[t]
                ),
            )
            cell(
                f"{out} /subset {name}",
                lambda p=params, e=subset_rows, o=out: check_subset(*get("subset", p, o), e, o),
            )
        for target in (0, 1):
            cell(
                f"{out} /scores target {target}",
                lambda t=target, o=out: check_scores(
                    get("scores", {"format": o, "target": t}, o)[1], scores[t], t
                ),
            )
    for path in ("selection", "scores", "subset"):  # the default format stays JSONL
        response = client.get(f"/v1/jobs/{job}/{path}", headers=h)
        if not response.headers["content-type"].startswith("application/x-ndjson"):
            failures.append(f"{pool_format} pool, default format of /{path}: not JSONL")
    return failures


@pytest.mark.parametrize("pool_format", FORMATS)
def test_every_download_of_a_pool_matches_its_rows(
    client: Any, api_key: str, pool_format: str
) -> None:
    failures = run_matrix(client, api_key, pool_format)
    assert not failures, "\n".join(failures)


def test_the_issue_scenario_through_a_real_random_job(
    client: Any, api_key: str, installed_tiny_model: Path
) -> None:
    """Issue 15's report: a CSV pool `text,source` whose first row holds a quoted newline, a
    `random` job (the real engine, through the worker's runner) selecting 2 of its 4 rows."""
    from worker.job_runner import JobRunner

    h = auth(api_key)
    pool_rows = [
        {"text": "hello\nworld", "source": "a"},
        {"text": "second row", "source": "b"},
        {"text": "third, with a comma", "source": "c"},
        {"text": "fourth ✓", "source": "d"},
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "source"])
    writer.writeheader()
    writer.writerows(pool_rows)
    pool = upload(client, api_key, out.getvalue().encode(), "pool.csv", "csv")
    validation = "".join(json.dumps(r) + "\n" for r in pool_rows[:2]).encode()
    target = upload(client, api_key, validation, "val.jsonl", "jsonl")
    body = {"pool": pool, "validation": target, "method": "random", "selection": {"budget": 2}}
    created = client.post("/v1/jobs", json=body, headers=h)
    assert created.status_code == 202, created.text
    job = created.json()["id"]
    JobRunner(job).run()
    assert client.get(f"/v1/jobs/{job}", headers=h).json()["status"] == "succeeded"
    chosen = client.get(f"/v1/jobs/{job}/selection", headers=h).text.split("\n")
    picked = sorted(json.loads(line)["index"] for line in chosen if line)
    assert len(picked) == 2
    expected = [pool_rows[i] for i in picked]
    for fmt in FORMATS:
        response = client.get(f"/v1/jobs/{job}/subset", params={"format": fmt}, headers=h)
        assert response.status_code == 200, response.text
        columns, rows = parse(response.content, fmt)
        assert columns == ["text", "source"] and rows == expected, (fmt, rows)
