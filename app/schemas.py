"""Request and response schemas. Requests forbid unknown fields; responses are explicit."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetRegister(Strict):
    uri: str = Field(description="file:// path under a configured data root")
    name: str | None = Field(default=None, max_length=300)


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    file_format: str
    row_format: str
    rows: int
    size_bytes: int
    sha256: str
    columns: list[str]
    created_at: datetime


class LoraParams(Strict):
    enabled: bool = True
    rank: int = Field(default=8, ge=1, le=1024)
    alpha: int = Field(default=32, ge=1, le=4096)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class ToVParams(Strict):
    """Train-on-Validation knobs; None means the engine's documented default."""

    base_size: int | None = Field(default=None, ge=1, description="|U|; default half the budget")
    rounds: int | None = Field(default=None, ge=1, le=64, description="L; default from |U|")
    variant: Literal["A", "B"] = "A"
    val_lr_factor: float = Field(default=0.1, gt=0, le=10)
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    batch_size: int = Field(default=16, ge=1, le=1024)
    score_fn: Literal["improvement", "absolute", "positive"] = "improvement"
    lora: LoraParams = LoraParams()
    tokens_per_batch: int = Field(default=8192, ge=128, le=1_048_576)


class SelectionParams(Strict):
    budget: float = Field(default=0.1, gt=0, description="a count (>= 1) or a fraction (< 1)")
    strategy: Literal["score+random", "score-only"] = "score+random"
    num_bins: int = Field(default=10, ge=1, le=1000)

    @field_validator("budget")
    @classmethod
    def _whole_count(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError("a budget of 1 or more is a row count and must be a whole number")
        return value


class JobCreate(Strict):
    pool: str = Field(description="a dataset id (ds_...) or a file:// path under a data root")
    validation: str = Field(description="a dataset id (ds_...) or a file:// path")
    model: str | None = Field(default=None, max_length=500, description="model name or folder")
    task: Literal["causal_lm", "token_classification"] = "causal_lm"
    method: Literal["tov", "random", "uncertainty", "less"] = "tov"
    tov: ToVParams = ToVParams()
    selection: SelectionParams = SelectionParams()
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_length: int = Field(default=512, ge=8, le=32768)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _distinct(self) -> JobCreate:
        if len(str(self.metadata)) > 16_384:
            raise ValueError("metadata is larger than 16 KiB")
        return self


class Progress(BaseModel):
    stage: str | None
    fraction: float
    rows_done: int
    rows_total: int
    eta_seconds: float | None
    message: str | None


class JobError(BaseModel):
    code: str | None
    detail: str | None


class JobRead(BaseModel):
    id: str
    status: str
    progress: Progress
    pool: str
    validation: str
    model: str
    task: str
    method: str
    params: dict[str, Any]
    seed: int
    metadata: dict[str, Any]
    attempt: int
    error: JobError | None
    stats: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


class JobList(BaseModel):
    items: list[JobRead]
    next_cursor: str | None


class SelectionCreate(SelectionParams):
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="default: the job's")


class SelectionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    status: str  # pending | ready | failed
    budget: float
    strategy: str
    num_bins: int
    seed: int
    size: int
    is_default: bool
    error: str | None
    created_at: datetime
