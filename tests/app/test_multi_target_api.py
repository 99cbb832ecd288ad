"""Multi-target jobs over HTTP: the body's rules, idempotency, per-target results and
re-selections (scores stored here by hand), and one worker attempt publishing K outcomes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.app.test_datasets_api import auth, upload

POOL = [
    {"prompt": f"Question {i}?", "completion": f"Answer {i}.", "source": "demo"} for i in range(12)
]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def setup_datasets(client: Any, key: str, k: int = 2) -> tuple[str, list[str]]:
    pool = upload(client, key, jsonl(POOL)).json()["id"]
    targets = [
        upload(client, key, jsonl(POOL[3 * t : 3 * t + 3]), name=f"val{t}.jsonl").json()["id"]
        for t in range(k)
    ]
    return pool, targets


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def test_exactly_one_of_validation_or_targets(client: Any, api_key: str) -> None:
    pool, (a, b) = setup_datasets(client, api_key)
    h = auth(api_key)
    neither = problem(client.post("/v1/jobs", json={"pool": pool}, headers=h), 422)
    assert "exactly one of `validation`" in neither["detail"]
    assert "neither was given" in neither["detail"]
    both = problem(
        client.post("/v1/jobs", json={"pool": pool, "validation": a, "targets": [a, b]}, headers=h),
        422,
    )
    assert "both were given" in both["detail"]
    null = problem(
        client.post(
            "/v1/jobs", json={"pool": pool, "validation": None, "targets": [a, b]}, headers=h
        ),
        422,
    )
    assert null["errors"][0]["field"] == "body.validation" and "not be null" in null["detail"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["JobCreate"]
    assert schema["oneOf"] == [{"required": ["validation"]}, {"required": ["targets"]}]
    assert schema["properties"]["targets"]["uniqueItems"] is True
    one = problem(client.post("/v1/jobs", json={"pool": pool, "targets": [a]}, headers=h), 422)
    assert one["errors"][0]["field"] == "body.targets"
    assert "at least 2" in one["detail"]
    many = problem(
        client.post("/v1/jobs", json={"pool": pool, "targets": [a] * 17}, headers=h), 422
    )
    assert many["errors"][0]["field"] == "body.targets" and "at most 16" in many["detail"]
    repeated = problem(
        client.post("/v1/jobs", json={"pool": pool, "targets": [a, b, a]}, headers=h), 422
    )
    assert f"targets[2] repeats targets[0] ('{a}')" in repeated["detail"]
    empty = problem(
        client.post("/v1/jobs", json={"pool": pool, "targets": [a, ""]}, headers=h), 422
    )
    assert empty["errors"][0]["field"] == "body.targets.1"
    missing = problem(
        client.post("/v1/jobs", json={"pool": pool, "targets": [a, "ds_missing"]}, headers=h),
        404,
    )
    assert missing["detail"].startswith("targets[1]: Dataset 'ds_missing'")
    odd = problem(
        client.post("/v1/jobs", json={"pool": pool, "targets": [a, "nonsense"]}, headers=h), 422
    )
    assert odd["detail"].startswith("targets[1]: 'nonsense' is neither a dataset id")


def test_a_multi_target_job_shows_its_targets(client: Any, api_key: str) -> None:
    pool, targets = setup_datasets(client, api_key, k=3)
    created = client.post(
        "/v1/jobs", json={"pool": pool, "targets": targets}, headers=auth(api_key)
    )
    assert created.status_code == 202, created.text
    job = client.get(f"/v1/jobs/{created.json()['id']}", headers=auth(api_key)).json()
    assert job["targets"] == targets and job["k"] == 3
    assert job["validation"] == targets[0]
    assert job["links"]["selection_2"] == f"/v1/jobs/{job['id']}/selection?target=2"
    single = client.post(
        "/v1/jobs", json={"pool": pool, "validation": targets[1]}, headers=auth(api_key)
    ).json()
    assert single["targets"] == [targets[1]] and single["k"] == 1
    assert "selection_1" not in single["links"]
    listed = client.get("/v1/jobs", headers=auth(api_key)).json()["items"]
    assert [j["k"] for j in listed[:2]] == [1, 3]


def test_idempotency_counts_the_targets_in_order(client: Any, api_key: str) -> None:
    from app.jobs.schemas import JobCreate
    from app.jobs.service import request_hash

    pool, (a, b) = setup_datasets(client, api_key)
    headers = {**auth(api_key), "Idempotency-Key": "multi-1"}
    body = {"pool": pool, "targets": [a, b], "selection": {"budget": 2}}
    first = client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert client.post("/v1/jobs", json=body, headers=headers).json()["id"] == first.json()["id"]
    swapped = client.post("/v1/jobs", json={**body, "targets": [b, a]}, headers=headers)
    assert problem(swapped, 409)["detail"].startswith("Idempotency-Key 'multi-1'")
    single = client.post(
        "/v1/jobs",
        json={"pool": pool, "validation": a, "selection": {"budget": 2}},
        headers=headers,
    )
    assert single.status_code == 409
    # A single-target body hashes as it did before `targets` (and `precision`) existed
    # (retries across upgrades).
    parsed = JobCreate.model_validate({"pool": pool, "validation": a})
    legacy = parsed.model_dump(mode="json")
    for later in (
        "targets",
        "precision",
        "gradient_checkpointing",
        "decontaminate_against",
        "leakage",
        "notify_url",
        "dry_run",
        "verify",
    ):  # fields added later, at their defaults, likewise
        del legacy[later]
    del legacy["tov"]["train_tokens_per_micro_batch"]
    canonical = json.dumps(legacy, sort_keys=True, separators=(",", ":")).encode()
    assert request_hash(parsed) == hashlib.sha256(canonical).hexdigest()


def _succeed_with_fake_scores(job_id: str) -> dict[int, np.ndarray]:
    """Mark the job succeeded and store distinct scores and a default selection per target."""
    from app.core.db import get_sessionmaker
    from app.core.models import Job
    from app.results.scores import write_scores
    from app.results.selections import add_selection

    stored = {}
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.progress = "succeeded", 1.0
        base = np.array([0, 1], dtype=np.int64)
        for target in range(2):
            scores = np.linspace(0.1, 1.2, len(POOL)).astype(np.float32)
            if target == 1:
                scores = scores[::-1].copy()  # target 1 prefers the first rows
            scores[base] = np.nan
            stored[target] = scores
            write_scores(
                session=session,
                job_id=job_id,
                scores=scores,
                lengths=np.full(len(POOL), 5 + target, np.int32),
                base_indices=base,
                target=target,
            )
            top = np.argsort(-np.nan_to_num(scores, nan=-1))[:2]
            add_selection(
                session=session,
                job_id=job_id,
                indices=top,
                scores=scores[top],
                from_random=np.zeros(2, bool),
                budget=2,
                strategy="score-only",
                num_bins=1,
                seed=0,
                is_default=True,
                target=target,
            )
        session.commit()
    return stored


def lines(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_results_per_target(client: Any, api_key: str) -> None:
    pool, targets = setup_datasets(client, api_key)
    h = auth(api_key)
    job = client.post("/v1/jobs", json={"pool": pool, "targets": targets}, headers=h).json()
    base = f"/v1/jobs/{job['id']}"
    early = problem(client.get(f"{base}/scores", params={"target": 1}, headers=h), 409)
    assert "queued" in early["detail"]
    stored = _succeed_with_fake_scores(job["id"])

    default = lines(client.get(f"{base}/selection", headers=h))
    zero = lines(client.get(f"{base}/selection", params={"target": 0}, headers=h))
    one = client.get(f"{base}/selection", params={"target": 1}, headers=h)
    assert default == zero and [r["index"] for r in zero] == [11, 10]
    assert [r["index"] for r in lines(one)] == [2, 3]
    assert f'filename="{job["id"]}-target1-selection.jsonl"' in one.headers["content-disposition"]
    for target in (0, 1):
        scores = lines(client.get(f"{base}/scores", params={"target": target}, headers=h))
        assert [r["length"] for r in scores] == [5 + target] * len(POOL)
        expected = [None if np.isnan(s) else pytest.approx(float(s)) for s in stored[target]]
        assert [r["score"] for r in scores] == expected
    subset = lines(client.get(f"{base}/subset", params={"target": 1}, headers=h))
    assert subset == [POOL[2], POOL[3]]

    for path in ("selection", "scores", "subset"):
        out = problem(client.get(f"{base}/{path}", params={"target": 2}, headers=h), 404)
        assert out["detail"] == (
            f"target: job '{job['id']}' has no target 2; use 0 to 1 (it has 2 targets)."
        )
        negative = problem(client.get(f"{base}/{path}", params={"target": -1}, headers=h), 422)
        assert negative["errors"][0]["field"] == "query.target"
    single = client.post(
        "/v1/jobs", json={"pool": pool, "validation": targets[0]}, headers=h
    ).json()
    one_target = problem(
        client.get(f"/v1/jobs/{single['id']}/scores", params={"target": 1}, headers=h), 404
    )
    assert one_target["detail"].endswith("use 0 (it has one target).")


def test_reselect_per_target(client: Any, api_key: str) -> None:
    from worker.reselect import compute_selection

    pool, targets = setup_datasets(client, api_key)
    h = auth(api_key)
    job = client.post("/v1/jobs", json={"pool": pool, "targets": targets}, headers=h).json()
    base = f"/v1/jobs/{job['id']}"
    _succeed_with_fake_scores(job["id"])
    body = {"budget": 3, "strategy": "score-only", "num_bins": 1}
    out = problem(client.post(f"{base}/selections", json={**body, "target": 2}, headers=h), 404)
    assert "has no target 2" in out["detail"]
    too_far = problem(
        client.post(f"{base}/selections", json={**body, "target": 16}, headers=h), 422
    )
    assert too_far["errors"][0]["field"] == "body.target"
    created = client.post(f"{base}/selections", json={**body, "target": 1}, headers=h)
    assert created.status_code == 202, created.text
    assert created.json()["target"] == 1 and created.json()["status"] == "pending"
    compute_selection(created.json()["id"])
    new = created.json()["id"]
    state = client.get(f"{base}/selections/{new}", headers=h).json()
    assert state["status"] == "ready" and state["size"] == 3 and state["target"] == 1
    listed = client.get(f"{base}/selections", headers=h).json()
    assert [(s["target"], s["is_default"]) for s in listed] == [(0, True), (1, True), (1, False)]

    picked = lines(client.get(f"{base}/selection", params={"selection_id": new}, headers=h))
    assert [r["index"] for r in picked] == [2, 3, 4]  # target 1's best three, not target 0's
    same = client.get(f"{base}/selection", params={"selection_id": new, "target": 1}, headers=h)
    assert lines(same) == picked
    wrong = problem(
        client.get(f"{base}/selection", params={"selection_id": new, "target": 0}, headers=h),
        404,
    )
    assert wrong["detail"].startswith(f"target: selection '{new}' is for target 1, not target 0")
    subset = lines(client.get(f"{base}/subset", params={"selection_id": new}, headers=h))
    assert subset == [POOL[2], POOL[3], POOL[4]]


def test_one_worker_attempt_publishes_every_target(
    client: Any, api_key: str, service_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """K = 2 through the worker with the fault tests' stand-in engine, which the runner calls
    once per target: each target's scores and selection are those of a single-target run."""
    from app.core.config import get_settings
    from app.core.db import get_sessionmaker
    from app.core.models import Dataset, Job
    from app.results.scores import read_base_indices, read_scores
    from tests.faults.standin_engine import run_selection
    from worker.engine_bridge import job_config
    from worker.job_runner import JobRunner

    monkeypatch.setenv("TOV_STANDIN_SECONDS", "0,0,0")
    model = service_dirs["models"] / "standin-model"  # the stand-in never reads it
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    pool, targets = setup_datasets(client, api_key)
    body = {
        "pool": pool,
        "targets": targets,
        "model": "standin-model",
        "selection": {"budget": 4},
        "seed": 5,
    }
    job = client.post("/v1/jobs", json=body, headers=auth(api_key)).json()
    runner = JobRunner(job["id"])
    runner.settings = get_settings().model_copy(
        update={"engine_entrypoint": "tests.faults.standin_engine:run_selection"}
    )
    runner.run()
    done = client.get(f"/v1/jobs/{job['id']}", headers=auth(api_key)).json()
    assert done["status"] == "succeeded", done
    assert done["stats"]["k"] == 2 and len(done["stats"]["targets"]) == 2
    assert done["progress"]["message"].endswith("for 2 targets")
    with get_sessionmaker()() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        config = job_config(row)
        uris = {d.id: Path(d.uri) for d in session.query(Dataset).all()}
        for target, dataset_id in enumerate(targets):
            alone = run_selection(
                pool_path=uris[pool],
                validation_path=uris[dataset_id],
                model="unused",
                config=config,
            )
            scores, _ = read_scores(session=session, job_id=row.id, target=target)
            np.testing.assert_array_equal(scores, alone.scores)
            base = read_base_indices(session=session, job_id=row.id, target=target)
            np.testing.assert_array_equal(base, alone.base_indices)
            chosen = lines(
                client.get(
                    f"/v1/jobs/{row.id}/selection", params={"target": target}, headers=auth(api_key)
                )
            )
            assert [r["index"] for r in chosen] == [int(i) for i in alone.selection.indices]
    assert (
        Path(runner.settings.artifact_root) / "jobs" / job["id"] / "checkpoint" / "target_001"
    ).is_dir()


def test_a_later_target_dataset_cannot_be_deleted_under_its_job(client: Any, api_key: str) -> None:
    pool, (a, b) = setup_datasets(client, api_key)
    h = auth(api_key)
    created = client.post("/v1/jobs", json={"pool": pool, "targets": [a, b]}, headers=h)
    assert created.status_code == 202, created.text
    refused = problem(client.delete(f"/v1/datasets/{b}", headers=h), 409)
    assert "used by 1 job" in refused["detail"]
    assert client.delete(f"/v1/jobs/{created.json()['id']}", headers=h).status_code == 204
    assert client.delete(f"/v1/datasets/{b}", headers=h).status_code == 204
