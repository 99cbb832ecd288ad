"""Issue 17's dry run, leakage check and explanations in the embedded mode (`tov-serve` on SQLite
and kombu's SQLite broker, the tiny model, one real job): a dry run of the job's body creates no
job and counts its tokens; the job then lists the pool's planted copies of a decontamination file
as leaks and never selects them, and its scores, selection and harmful rows carry explanations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import wait_for_job
from tests.e2e.test_embedded_mode import create_key, embedded_env, embedded_service
from tests.e2e.test_leakage_job import PARAMS, _changed_word, _secret_rows
from tests.e2e.test_selection_job import OTHER, TARGET
from tests.service_fixtures import write_jsonl

pytestmark = pytest.mark.e2e


def _job_ids(http: httpx.Client) -> list[str]:
    listed = http.get("/v1/jobs", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    return [j["id"] for j in listed.json()["items"]]


def test_the_embedded_service_checks_leaks_and_explains_a_job(
    tmp_path: Path, service_dirs: dict[str, Path], installed_tiny_model: Path
) -> None:
    state, data = tmp_path / "state", tmp_path / "data"
    data.mkdir()
    env = embedded_env(state, service_dirs["models"], data)
    secret = _secret_rows(7)  # the user's own test set: must never reach the selection
    planted = [  # a copy in capitals and a near copy with one word changed, of each secret row
        {"prompt": r["prompt"], "completion": v}
        for r in secret
        for v in (r["completion"].upper(), _changed_word(r["completion"]))
    ]
    pool_rows: list[dict[str, Any]] = [*OTHER, *TARGET * 2, *planted]  # target-like: TARGET
    planted_at = set(range(len(pool_rows) - len(planted), len(pool_rows)))
    validation_rows: list[dict[str, object]] = [{**r} for r in TARGET[:4]]
    copies_of_validation = {i for i, r in enumerate(pool_rows) if r in validation_rows}
    pool = write_jsonl(data / "pool.jsonl", pool_rows)
    validation = write_jsonl(data / "val.jsonl", validation_rows)
    secret_file = write_jsonl(data / "secret.jsonl", [{**r} for r in secret])
    budget = 12
    body: dict[str, Any] = {
        "pool": f"file://{pool}",
        "validation": f"file://{validation}",
        "decontaminate_against": [f"file://{secret_file}"],
        "leakage": {"validation": "report", "decontaminate": "exclude"},
        "selection": {"budget": budget, "strategy": "score+random", "num_bins": 2},
        **{**PARAMS, "tov": {**PARAMS["tov"], "rounds": 2}},
    }
    log = tmp_path / "service.log"
    with embedded_service(env, log) as url:
        http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {create_key(env)}"}, timeout=60
        )
        before = _job_ids(http)
        dry = http.post("/v1/jobs", json={**body, "dry_run": True})
        assert dry.status_code == 200, dry.text
        estimate = dry.json()
        assert _job_ids(http) == before  # the dry run wrote no job
        created = http.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert sorted(_job_ids(http)) == sorted([job_id, *before])
        done: dict[str, Any] = wait_for_job(http, job_id, timeout=600)
        assert done["status"] == "succeeded", (done, log.read_text()[-4000:])
        leaks = http.get(f"/v1/jobs/{job_id}/leaks", params={"limit": 1000}).json()
        selection = [
            json.loads(line) for line in http.get(f"/v1/jobs/{job_id}/selection").text.splitlines()
        ]
        explained = http.get(f"/v1/jobs/{job_id}/selection", params={"explain": "true"})
        scores = http.get(f"/v1/jobs/{job_id}/scores", params={"explain": "true"})
        harmful = http.get(f"/v1/jobs/{job_id}/harmful", params={"limit": 5}).json()

    # The dry run: the job's rows, its tokens counted with the tokenizer, and a memory estimate.
    assert estimate["dry_run"] is True and estimate["model"] == "tiny-llama"
    assert estimate["rows"]["pool"] == len(pool_rows) and estimate["rows"]["budget"] == budget
    assert estimate["rows"]["validation"] == len(validation_rows)
    for name in ("pool", "validation"):
        counted = estimate["tokens"][name]
        assert counted["rows"] == estimate["rows"][name]
        assert 0 < counted["loss_tokens"] < counted["tokens"]
    assert estimate["memory"]["peak_bytes"] > 0 and isinstance(estimate["fits"], bool)
    assert estimate["time"]["seconds"] > 0

    # Leaks: the planted copies of the secret file, excluded; the validation copies, reported.
    by_row = {(x["pool_index"], x["source"]): x for x in leaks["items"]}
    assert leaks["total"] == len(leaks["items"]) == len(planted_at) + len(copies_of_validation)
    assert leaks["excluded_total"] == len(planted_at) == done["stats"]["leaks"]["excluded"]
    assert done["leak_count"] == len(planted_at | copies_of_validation)
    assert {i for i, s in by_row if s == "decontaminate"} == planted_at
    assert {i for i, s in by_row if s == "validation"} == copies_of_validation
    for (index, source), leak in by_row.items():
        assert leak["excluded"] == (source == "decontaminate")
        if source == "decontaminate":
            assert leak["kind"] == ("exact" if (index - min(planted_at)) % 2 == 0 else "near")
            assert 0.6 <= leak["similarity"] <= 1.0
            assert leak["match_preview"].startswith(secret[leak["match_index"]]["prompt"])
    chosen = {int(row["index"]) for row in selection}
    assert len(chosen) == budget and not chosen & planted_at

    # /scores?explain=true: losses before and after, the length bin and the rank in it.
    assert scores.status_code == 200, scores.text
    score_rows = [json.loads(line) for line in scores.text.splitlines()]
    assert len(score_rows) == len(pool_rows)
    rated = [r for r in score_rows if r["score"] is not None]
    assert len(rated) >= len(pool_rows) - len(planted) - PARAMS["tov"]["base_size"]
    for row in rated:
        assert row["loss_before"] - row["loss_after"] == pytest.approx(row["score"], abs=5e-5)
        if int(row["index"]) in planted_at:  # excluded rows are scored but never binned
            assert row["bin"] is None and row["bin_rank"] is None
        else:
            assert row["bin"] in (0, 1) and row["bin_rank"] >= 1
    for b in (0, 1):
        ranked = sorted((r for r in rated if r["bin"] == b), key=lambda r: r["bin_rank"])
        assert ranked
        assert [r["bin_rank"] for r in ranked] == list(range(1, len(ranked) + 1))
        assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)

    # /selection?explain=true: why each row was picked.
    assert explained.status_code == 200, explained.text
    reasons = [json.loads(line) for line in explained.text.splitlines()]
    assert [int(r["index"]) for r in reasons] == [int(r["index"]) for r in selection]
    picked_by_score = [r for r in reasons if r["source"] == "score"]
    assert len(picked_by_score) == budget // 2
    for r in reasons:
        if r["source"] == "random":
            assert r["reason"] == "random" and r["bin"] is None
        else:
            expected = f"score: rank {r['bin_rank']} of {r['bin_quota']} in length bin {r['bin']}"
            assert r["reason"] == expected and r["bin_rank"] <= r["bin_quota"]

    # /harmful: the rows whose loss rose most, in order, matching /scores.
    rises = sorted(
        ((r["loss_after"] - r["loss_before"], int(r["index"])) for r in rated),
        key=lambda t: -t[0],
    )
    rose = [index for rise, index in rises if rise > 0]
    assert len(rose) >= 2, "the nudge toward the target should hurt a few rows"
    assert harmful["explained"] and harmful["rows_with_loss_increase"] == len(rose)
    items = harmful["items"]
    assert [r["index"] for r in items] == rose[:5]
    increases = [r["loss_increase"] for r in items]
    assert increases == sorted(increases, reverse=True) and all(x > 0 for x in increases)
    for r in items:
        row = pool_rows[r["index"]]
        assert r["preview"] == f"{row['prompt']} {row['completion']}"
        assert r["selected"] == (r["index"] in chosen)
