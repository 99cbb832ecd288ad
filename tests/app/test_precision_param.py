"""The `precision` job parameter: validated by the API schema, mapped onto the engine's JobConfig
by the worker (issue 14)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.models import Job
from app.jobs.schemas import JobCreate
from worker.engine_bridge import job_config


def test_the_api_accepts_the_three_policies_only() -> None:
    body = {"pool": "ds_a", "validation": "ds_b"}
    assert JobCreate.model_validate(body).precision == "auto"
    for value in ("auto", "float32", "bfloat16"):
        assert JobCreate.model_validate({**body, "precision": value}).precision == value
    with pytest.raises(ValidationError, match="precision"):
        JobCreate.model_validate({**body, "precision": "float16"})


def test_the_worker_passes_it_to_the_engine() -> None:
    job = Job(task="causal_lm", method="tov", seed=0, params={"precision": "bfloat16"})
    assert job_config(job).precision == "bfloat16"
    assert job_config(Job(task="causal_lm", method="tov", seed=0, params={})).precision == "auto"
