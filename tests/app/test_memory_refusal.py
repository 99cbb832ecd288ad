"""A worker refuses a job its device cannot hold before it loads anything: the job fails for good
with `insufficient_memory` and a message that says how much is needed and which knob lowers it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.app.test_datasets_api import auth, upload

ROWS = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(12)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_a_job_too_big_for_the_worker_fails_before_loading(
    client: Any,
    api_key: str,
    installed_tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tov_engine.methods.embedding as loader
    from app.core.config import get_settings
    from worker.job_runner import JobRunner

    loads: list[object] = []
    real_load = loader.load_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(loader, "load_model", spy)
    pool = upload(client, api_key, jsonl(ROWS)).json()["id"]
    val = upload(client, api_key, jsonl(ROWS[:3]), name="val.jsonl").json()["id"]
    body = {
        "pool": pool,
        "validation": val,
        "model": "tiny-llama",
        "selection": {"budget": 4},
        "max_length": 64,
    }
    created = client.post("/v1/jobs", json=body, headers=auth(api_key))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    runner = JobRunner(job_id)
    # TOV_WORKER_MEMORY_GB: a worker that may use 1 MiB
    runner.settings = get_settings().model_copy(update={"worker_memory_gb": 1 / 1024})
    runner.run()

    done = client.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
    assert done["status"] == "failed", done
    error = done["error"]
    assert error["code"] == "insufficient_memory", error
    message = error["detail"]
    assert "this job needs about" in message and "GiB on cpu" in message
    assert "0.0 GiB free" in message
    knobs = (
        "tov.train_tokens_per_micro_batch",
        "tov.tokens_per_batch",
        "max_length",
        "gradient_checkpointing",
        "precision",
        "lora.rank",
    )
    # The check counts the real rows (a few tokens each): for this tiny model the need is the
    # framework itself and no knob would lower it, so the advice is a bigger device.
    named = any(f"{knob} (now " in message or f"{knob}: " in message for knob in knobs)
    assert named or "use a smaller model or a device with more memory" in message, message
    assert "framework" in message
    assert loads == []  # refused before the model was loaded

    # A second delivery finds the job finished: a refusal is terminal, never retried.
    runner.run()
    again = client.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
    assert again["status"] == "failed" and again["error"]["code"] == "insufficient_memory"
    assert loads == []

    # The same job on a worker with the machine's free memory loads the model and runs (so the
    # spy above would have seen a load).
    fits = client.post("/v1/jobs", json=body, headers=auth(api_key)).json()["id"]
    JobRunner(fits).run()
    assert client.get(f"/v1/jobs/{fits}", headers=auth(api_key)).json()["status"] == "succeeded"
    assert len(loads) == 1
