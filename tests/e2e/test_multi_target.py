"""A multi-target job end to end (HTTP API -> Postgres -> Redis -> Celery worker ->
run_multi_target): K = 2 validation sets on one pool. Each target's scores and selection must be
those of a single-target job with that validation set (same seed and parameters), and each
target's best-scored rows must be its own kind of row."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import running_api, running_worker, wait_for_job
from tests.e2e.test_selection_job import OTHER, TARGET
from tests.service_fixtures import write_jsonl
from tov_client import Client

pytestmark = pytest.mark.e2e

COLOURS = OTHER[:6]  # the pool holds each colour row four times
PARAMS: dict[str, Any] = {
    "selection": {"budget": 8, "strategy": "score+random", "num_bins": 2},
    "tov": {"rounds": 2, "base_size": 4, "learning_rate": 0.01, "batch_size": 4},
    "max_length": 64,
    "seed": 3,
}


def rows(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_two_targets_match_two_single_jobs(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    installed_tiny_model: Path,
    api_key: str,
    tmp_path: Path,
) -> None:
    pool_rows = OTHER + TARGET * 2
    pool = write_jsonl(service_dirs["data"] / "multi-pool.jsonl", pool_rows)
    sums = write_jsonl(service_dirs["data"] / "multi-val-sums.jsonl", TARGET[:4])
    colours = write_jsonl(service_dirs["data"] / "multi-val-colours.jsonl", COLOURS[:4])
    with running_api(service_env, tmp_path) as url, running_worker(service_env, tmp_path):
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )
        tov = Client(url, api_key)
        multi = tov.create_job(
            f"file://{pool}", targets=[f"file://{sums}", f"file://{colours}"], **PARAMS
        )
        assert multi.k == 2 and len(multi.targets) == 2
        singles = [
            client.post(
                "/v1/jobs", json={"pool": f"file://{pool}", "validation": f"file://{v}", **PARAMS}
            ).json()["id"]
            for v in (sums, colours)
        ]
        done = wait_for_job(client, multi.id)
        log = (tmp_path / "worker.log").read_text()[-3000:]
        assert done["status"] == "succeeded", (done, log)
        assert done["stats"]["k"] == 2 and len(done["stats"]["targets"]) == 2
        assert done["progress"]["fraction"] == 1.0
        for job_id in singles:
            assert wait_for_job(client, job_id)["status"] == "succeeded", log

        base = f"/v1/jobs/{multi.id}"
        per_target = [
            (rows(client, f"{base}/selection", target=t), rows(client, f"{base}/scores", target=t))
            for t in (0, 1)
        ]
        alone = [
            (rows(client, f"/v1/jobs/{j}/selection"), rows(client, f"/v1/jobs/{j}/scores"))
            for j in singles
        ]
        subset = rows(client, f"{base}/subset", target=1)
        out_of_range = client.get(f"{base}/scores", params={"target": 2})
        reselection = tov.create_selection(
            multi.id, budget=6, strategy="score-only", num_bins=1, target=1
        )
        for _ in range(120):
            if tov.get_selection(multi.id, reselection.id).status != "pending":
                break
            time.sleep(0.25)
        reselected = tov.read_frame(multi.id, selection_id=reselection.id)
        listed = [(s.target, s.is_default) for s in tov.list_selections(multi.id)]
        downloaded = tov.download(multi.id, "selection", target=1, dest=f"{tmp_path}/dl/")
        tov.close()

    for target in (0, 1):
        assert per_target[target] == alone[target], f"target {target} differs from its own job"
    assert per_target[0][1] != per_target[1][1]
    assert out_of_range.status_code == 404
    assert "has no target 2" in out_of_range.json()["detail"]
    assert subset == [pool_rows[i] for i in sorted(r["index"] for r in per_target[1][0])]

    # Each target's best-scored rows are its own kind: sums for target 0, colours for target 1.
    kinds = {0: "arithmetic", 1: "colours"}
    for target, (_, scores) in enumerate(per_target):
        scored = [r for r in scores if r["score"] is not None]
        top = sorted(scored, key=lambda r: (-r["score"], r["index"]))[:6]
        assert {pool_rows[r["index"]]["source"] for r in top} == {kinds[target]}, target
        mean = {
            kind: sum(r["score"] for r in scored if pool_rows[r["index"]]["source"] == kind)
            / sum(1 for r in scored if pool_rows[r["index"]]["source"] == kind)
            for kind in kinds.values()
        }
        other = kinds[1 - target]
        assert mean[kinds[target]] > mean[other], (target, mean)

    # A re-selection of target 1 reads target 1's scores.
    top1 = sorted(
        (r for r in per_target[1][1] if r["score"] is not None),
        key=lambda r: (-r["score"], r["index"]),
    )[:6]
    assert sorted(reselected["index"].tolist()) == sorted(r["index"] for r in top1)
    assert listed == [(0, True), (1, True), (1, False)]
    assert downloaded.name == f"{multi.id}-target1-selection.jsonl"
    assert [json.loads(x) for x in downloaded.read_text().splitlines()] == per_target[1][0]
