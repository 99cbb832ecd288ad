"""The engine knobs the paper is silent on, through the API: tov.token_score and
selection.min_per_bin (stored with each selection and used by re-selections)."""

from __future__ import annotations

import json
from typing import Any

from tests.app.test_datasets_api import auth
from tests.app.test_multi_target_api import _succeed_with_fake_scores, problem, setup_datasets


def test_token_score_is_a_job_parameter(client: Any, api_key: str) -> None:
    pool, (validation, _) = setup_datasets(client, api_key)
    h = auth(api_key)
    body = {"pool": pool, "validation": validation, "task": "token_classification"}
    created = client.post("/v1/jobs", json={**body, "tov": {"token_score": "mean"}}, headers=h)
    assert created.status_code == 202, created.text
    assert created.json()["params"]["tov"]["token_score"] == "mean"
    default = client.post("/v1/jobs", json={**body, "seed": 1}, headers=h).json()
    assert default["params"]["tov"]["token_score"] == "class_balanced"
    bad = problem(
        client.post("/v1/jobs", json={**body, "tov": {"token_score": "max"}}, headers=h), 422
    )
    assert bad["errors"][0]["field"] == "body.tov.token_score"


def test_min_per_bin_is_kept_with_a_selection_and_used_by_the_reselection(
    client: Any, api_key: str
) -> None:
    from worker.reselect import compute_selection

    pool, (validation, _) = setup_datasets(client, api_key)
    h = auth(api_key)
    job = client.post(
        "/v1/jobs",
        json={"pool": pool, "validation": validation, "selection": {"min_per_bin": 2}},
        headers=h,
    ).json()
    assert job["params"]["selection"]["min_per_bin"] == 2
    _succeed_with_fake_scores(job["id"])
    base = f"/v1/jobs/{job['id']}"
    bad = problem(client.post(f"{base}/selections", json={"min_per_bin": -1}, headers=h), 422)
    assert bad["errors"][0]["field"] == "body.min_per_bin"
    body = {"budget": 4, "strategy": "score-only", "num_bins": 4}
    runs = {}
    for per_bin in (0, 4):
        made = client.post(f"{base}/selections", json={**body, "min_per_bin": per_bin}, headers=h)
        assert made.status_code == 202, made.text
        assert made.json()["min_per_bin"] == per_bin
        compute_selection(made.json()["id"])
        state = client.get(f"{base}/selections/{made.json()['id']}", headers=h).json()
        assert state["status"] == "ready" and state["min_per_bin"] == per_bin
        text = client.get(
            f"{base}/selection", params={"selection_id": made.json()["id"]}, headers=h
        ).text
        runs[per_bin] = sorted(json.loads(line)["index"] for line in text.splitlines())
    # Rows 2-11 are scored (0, 1 are U), all of one length, scores rising with the index. Four
    # equal-count bins (3, 3, 2, 2 rows) take each bin's best; one bin takes the four best.
    assert runs[0] == [4, 7, 9, 11]
    assert runs[4] == [8, 9, 10, 11]
