"""Selection schemas: a new selection from stored scores, and a selection as the API shows it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.schemas import MAX_TARGETS, SelectionParams


class SelectionCreate(SelectionParams):
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="default: the job's")
    target: int = Field(
        default=0,
        ge=0,
        lt=MAX_TARGETS,
        description="which target's scores to select from (0-based; 0 for a single-target job)",
    )


class SelectionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    target: int  # which of the job's targets it selects for (0..K-1)
    status: str  # pending | ready | failed
    budget: float
    strategy: str
    num_bins: int
    min_per_bin: int
    seed: int
    size: int
    is_default: bool
    error: str | None
    created_at: datetime
