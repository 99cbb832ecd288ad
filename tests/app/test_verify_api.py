"""`verify` in a job body: its rules (422 naming the field), how the job shows it before and
after a report is stored, and an unchanged request hash for bodies without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.core.db import get_sessionmaker
from app.core.models import Job
from tests.app.test_datasets_api import auth
from tests.app.test_multi_target_api import problem, setup_datasets


@pytest.mark.parametrize(
    ("verify", "field", "text"),
    [
        ({"holdout": 0}, "body.verify.holdout", "greater than 0"),
        ({"holdout": 1}, "body.verify.holdout", "less than 1"),
        ({"holdout": 0.25, "seeds": 0}, "body.verify.seeds", "greater than or equal to 1"),
        ({"holdout": 0.25, "seeds": 11}, "body.verify.seeds", "less than or equal to 10"),
        ({"holdout": 0.25, "epochs": 9}, "body.verify.epochs", "xtra"),
    ],
)
def test_verify_ranges_are_checked(
    client: Any, api_key: str, verify: dict[str, Any], field: str, text: str
) -> None:
    pool, (a, _) = setup_datasets(client, api_key)
    body = {"pool": pool, "validation": a, "verify": verify}
    refused = problem(client.post("/v1/jobs", json=body, headers=auth(api_key)), 422)
    assert refused["errors"][0]["field"] == field, refused
    assert text in refused["detail"]


def test_verify_is_for_single_target_jobs(client: Any, api_key: str) -> None:
    pool, targets = setup_datasets(client, api_key)
    body = {"pool": pool, "targets": targets, "verify": {"holdout": 0.25}}
    refused = problem(client.post("/v1/jobs", json=body, headers=auth(api_key)), 422)
    assert refused["errors"][0]["field"] == "body.verify"
    assert "single-target" in refused["detail"]


def test_the_job_shows_its_verify_request_and_then_its_report(client: Any, api_key: str) -> None:
    pool, (a, _) = setup_datasets(client, api_key)
    h = auth(api_key)
    plain = client.post("/v1/jobs", json={"pool": pool, "validation": a}, headers=h).json()
    assert plain["verify"] is None and "verify" not in plain["params"]
    body = {"pool": pool, "validation": a, "verify": {"holdout": 0.3}}
    created = client.post("/v1/jobs", json=body, headers=h)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["params"]["verify"] == {"holdout": 0.3, "seeds": 2}
    assert job["verify"]["holdout"] == 0.3 and job["verify"]["seeds"] == 2
    assert job["verify"]["base_loss"] is None and job["verify"]["error"] is None

    report = {
        "holdout": 0.3, "seeds": 2, "holdout_rows": 1, "selected_rows": 4,
        "base_loss": 2.5, "selected_loss": 1.5, "random_loss": 2.0,
        "selected_losses": [1.4, 1.6], "random_losses": [2.1, 1.9],
        "improvement": 0.5, "improvement_sd": 0.0, "improvement_percent": 25.0,
        "base_improvement": 1.0, "seconds": 3.0, "recipe": {"epochs": 3},
    }  # fmt: skip
    with get_sessionmaker()() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.verify_report = report
        session.commit()
    shown = client.get(f"/v1/jobs/{job['id']}", headers=h).json()["verify"]
    assert shown == {**report, "error": None}

    with get_sessionmaker()() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.verify_report = {"error": "verification failed: out of memory"}
        session.commit()
    shown = client.get(f"/v1/jobs/{job['id']}", headers=h).json()["verify"]
    assert shown["error"] == "verification failed: out of memory"
    assert shown["holdout"] == 0.3 and shown["improvement"] is None


def test_a_failed_verification_still_publishes_the_selection(
    client: Any,
    api_key: str,
    service_dirs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One worker attempt with the fault tests' stand-in engine (selection only) and a model
    folder no fine-tune can load: the selection, made on the kept validation rows, is published
    and the job's `verify` says why verification failed."""
    from app.core.config import get_settings
    from worker.job_runner import JobRunner

    monkeypatch.setenv("TOV_STANDIN_SECONDS", "0,0,0")
    model = service_dirs["models"] / "standin-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    pool, (a, _) = setup_datasets(client, api_key)
    body = {
        "pool": pool,
        "validation": a,
        "model": "standin-model",
        "selection": {"budget": 4},
        "verify": {"holdout": 0.34, "seeds": 1},
    }
    job = client.post("/v1/jobs", json=body, headers=auth(api_key)).json()
    runner = JobRunner(job["id"])
    runner.settings = get_settings().model_copy(
        update={"engine_entrypoint": "tests.faults.standin_engine:run_selection"}
    )
    runner.run()
    h = auth(api_key)
    done = client.get(f"/v1/jobs/{job['id']}", headers=h).json()
    assert done["status"] == "succeeded", done
    assert done["verify"]["error"].startswith("verification failed"), done["verify"]
    assert done["verify"]["holdout"] == 0.34 and done["verify"]["base_loss"] is None
    selection = client.get(f"/v1/jobs/{job['id']}/selection", headers=h).text.splitlines()
    assert len(selection) == 4
    folder = Path(runner.settings.artifact_root) / "jobs" / job["id"] / "verify"
    kept = (folder / "validation-kept.jsonl").read_text().splitlines()
    held = (folder / "validation-holdout.jsonl").read_text().splitlines()
    assert (len(kept), len(held)) == (2, 1)  # round(0.34 * 3) held out of the 3 rows
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=h).json()
    assert any(e["message"].startswith("stage verify") for e in events if e["kind"] == "stage")


def test_the_verification_share_of_a_jobs_progress() -> None:
    """The job's progress runs over selection then verification, in the engine's work units."""
    from tov_engine import JobConfig, SelectionConfig, ToVConfig
    from tov_engine.config import VerifySettings
    from worker.verification import verify_share

    tov = JobConfig(selection=SelectionConfig(budget=24), tov=ToVConfig(rounds=2))
    one, two = VerifySettings(seeds=1), VerifySettings(seeds=2)
    assert verify_share(JobConfig(method="random"), one, 240, 16) == 1.0  # nothing else to do
    share = verify_share(tov, two, 240, 16)
    assert 0 < verify_share(tov, one, 240, 16) < share < 1
    assert verify_share(tov, two, 24_000, 16) < share  # a larger pool: selection takes more
