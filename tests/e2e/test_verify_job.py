"""A job that verifies its selection, end to end (HTTP API -> Postgres -> Redis -> Celery worker
-> engine): a quarter of the validation rows is held out, the selection runs on the rest, and
fresh fine-tunes on the selection beat same-size random subsets on the held-out rows. The
progress passes through stage `verify`, and the `tov` client shows the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import running_api, running_worker, wait_for_job
from tests.service_fixtures import write_jsonl
from tov_client import Client
from tov_client.commands.job_views import verify_text

pytestmark = pytest.mark.e2e

FILLER: list[dict[str, object]] = [
    {"prompt": f"Question {i}: say something.", "completion": f"Filler sentence number {i}."}
    for i in range(40)
]
PLANTED: list[dict[str, object]] = [  # target-like rows in the pool
    {"prompt": f"Translate to French: good morning {i}.", "completion": "Bonjour. Bonjour."}
    for i in range(8)
]
VALIDATION: list[dict[str, object]] = [
    {"prompt": f"Translate to French: good evening {i}.", "completion": "Bonjour. Bonjour."}
    for i in range(8)
]


def test_a_job_verifies_its_selection_on_held_out_rows(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    installed_tiny_model: Path,
    api_key: str,
    tmp_path: Path,
) -> None:
    pool_rows = FILLER + PLANTED
    pool = write_jsonl(service_dirs["data"] / "verify-pool.jsonl", pool_rows)
    validation = write_jsonl(service_dirs["data"] / "verify-val.jsonl", VALIDATION)
    planted_at = set(range(len(FILLER), len(pool_rows)))
    with running_api(service_env, tmp_path) as url, running_worker(service_env, tmp_path):
        http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )
        tov = Client(url, api_key)
        job = tov.create_job(
            f"file://{pool}",
            f"file://{validation}",
            budget=8,
            strategy="score-only",
            selection={"num_bins": 1},
            tov={"rounds": 2, "base_size": 4, "learning_rate": 0.01, "batch_size": 4},
            max_length=64,
            seed=3,
            verify={"holdout": 0.25, "seeds": 2},
        )
        assert job.verify is not None and not job.verify.reported
        done = wait_for_job(http, job.id, timeout=600)
        log = (tmp_path / "worker.log").read_text()[-3000:]
        assert done["status"] == "succeeded", (done, log)
        events = http.get(f"/v1/jobs/{job.id}/events").json()
        lines = http.get(f"/v1/jobs/{job.id}/selection").text.splitlines()
        selection = [int(json.loads(line)["index"]) for line in lines]
        shown = tov.get_job(job.id)

    report: Any = done["verify"]
    stats: Any = done["stats"]
    progress: Any = done["progress"]
    assert isinstance(report, dict) and report["error"] is None, (report, log)
    assert report["holdout"] == 0.25 and report["seeds"] == 2
    assert report["holdout_rows"] == round(0.25 * len(VALIDATION)) == 2
    assert report["selected_rows"] == 8
    assert len(report["selected_losses"]) == 2 and len(report["random_losses"]) == 2
    # The selection ran on the six kept validation rows only.
    assert stats["validation_rows"] == len(VALIDATION) - 2
    # It found the planted rows, and fine-tuning on them beats random rows on held-out rows.
    assert len(set(selection) & planted_at) >= 6, selection
    assert report["improvement"] > 0 and report["improvement_percent"] > 0
    assert report["improvement"] == pytest.approx(report["random_loss"] - report["selected_loss"])
    assert report["selected_loss"] < report["base_loss"]
    stages = [e["message"] for e in events if e["kind"] == "stage"]
    assert any(m.startswith("stage verify") for m in stages), stages
    assert stages.index(next(m for m in stages if m.startswith("stage verify"))) == len(stages) - 1
    assert progress["fraction"] == 1.0
    assert shown.verify is not None and shown.verify.reported
    assert f"({report['improvement_percent']:+.2f}%)" in verify_text(shown.verify)


def test_the_embedded_service_verifies_a_selection(
    tmp_path: Path, service_dirs: dict[str, Path], installed_tiny_model: Path
) -> None:
    """The same job in embedded mode (SQLite, migrated by the launcher; kombu's SQLite broker)."""
    from tests.e2e.test_embedded_mode import create_key, embedded_env, embedded_service

    state, data = tmp_path / "state", tmp_path / "data"
    data.mkdir()
    env = embedded_env(state, service_dirs["models"], data)
    pool = write_jsonl(data / "pool.jsonl", FILLER + PLANTED)
    validation = write_jsonl(data / "val.jsonl", VALIDATION)
    log = tmp_path / "service.log"
    with embedded_service(env, log) as url:
        http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {create_key(env)}"}, timeout=30
        )
        body = {
            "pool": f"file://{pool}",
            "validation": f"file://{validation}",
            "selection": {"budget": 8, "strategy": "score-only", "num_bins": 1},
            "tov": {"rounds": 2, "base_size": 4, "learning_rate": 0.01, "batch_size": 4},
            "max_length": 64,
            "seed": 3,
            "verify": {"holdout": 0.25, "seeds": 1},
        }
        created = http.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        done = wait_for_job(http, created.json()["id"], timeout=600)
    assert done["status"] == "succeeded", (done, log.read_text()[-4000:])
    report: Any = done["verify"]
    stats: Any = done["stats"]
    assert report["error"] is None and report["seeds"] == 1 and report["holdout_rows"] == 2
    assert stats["validation_rows"] == len(VALIDATION) - 2
    assert report["improvement"] > 0 and report["improvement_sd"] == 0.0
