"""The training-memory job parameters, `gradient_checkpointing` and
`tov.train_tokens_per_micro_batch`: validated by the API schema, carried to the engine's JobConfig
by the worker, and absent from the idempotency digest at their defaults (issue 14)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.models import Job
from app.jobs.schemas import JobCreate
from app.jobs.service import request_hash
from worker.engine_bridge import job_config

BODY = {"pool": "ds_a", "validation": "ds_b"}


def test_the_api_accepts_the_three_modes_only() -> None:
    assert JobCreate.model_validate(BODY).gradient_checkpointing == "auto"
    for value in ("auto", "on", "off"):
        body = JobCreate.model_validate({**BODY, "gradient_checkpointing": value})
        assert body.gradient_checkpointing == value
    for bad in ("yes", True, "ON", None):
        with pytest.raises(ValidationError, match="gradient_checkpointing"):
            JobCreate.model_validate({**BODY, "gradient_checkpointing": bad})


def test_the_api_bounds_the_micro_batch_budget() -> None:
    assert JobCreate.model_validate(BODY).tov.train_tokens_per_micro_batch == 4096
    body = JobCreate.model_validate({**BODY, "tov": {"train_tokens_per_micro_batch": 512}})
    assert body.tov.train_tokens_per_micro_batch == 512
    for bad in (0, 127, 1_048_577, "many", 1024.5):
        with pytest.raises(ValidationError, match="train_tokens_per_micro_batch"):
            JobCreate.model_validate({**BODY, "tov": {"train_tokens_per_micro_batch": bad}})


def test_the_worker_passes_both_to_the_engine() -> None:
    params = {"gradient_checkpointing": "on", "tov": {"train_tokens_per_micro_batch": 1024}}
    config = job_config(Job(task="causal_lm", method="tov", seed=0, params=params))
    assert config.gradient_checkpointing == "on"
    assert config.tov.train_tokens_per_micro_batch == 1024
    old = job_config(Job(task="causal_lm", method="tov", seed=0, params={"tov": {}}))
    assert old.gradient_checkpointing == "auto"  # a job stored before the knobs existed
    assert old.tov.train_tokens_per_micro_batch == 4096


def test_defaults_hash_as_before_the_knobs_existed() -> None:
    plain = JobCreate.model_validate(BODY)
    explicit = JobCreate.model_validate(
        {**BODY, "gradient_checkpointing": "auto", "tov": {"train_tokens_per_micro_batch": 4096}}
    )
    assert request_hash(plain) == request_hash(explicit)
    dumped = plain.model_dump(mode="json")
    assert "gradient_checkpointing" in dumped
    on = JobCreate.model_validate({**BODY, "gradient_checkpointing": "on"})
    small = JobCreate.model_validate({**BODY, "tov": {"train_tokens_per_micro_batch": 1024}})
    assert len({request_hash(plain), request_hash(on), request_hash(small)}) == 3
