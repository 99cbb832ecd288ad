"""Job schemas: the body of POST /v1/jobs, its knobs, and the job as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from app.schemas import REFERENCE_PATTERN, Strict

# One dataset reference in a job body (an item of `targets`).
DatasetReference = Annotated[
    str, Field(min_length=1, json_schema_extra={"pattern": REFERENCE_PATTERN})
]
MIN_TARGETS, MAX_TARGETS = 2, 16
_REFERENCE_SCHEMA = {"type": "string", "minLength": 1, "pattern": REFERENCE_PATTERN}
_TARGETS_SCHEMA = {
    "type": "array",
    "items": _REFERENCE_SCHEMA,
    "minItems": MIN_TARGETS,
    "maxItems": MAX_TARGETS,
    "uniqueItems": True,
}


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
    token_score: Literal["class_balanced", "mean"] = Field(
        default="class_balanced",
        description="token classification: a row's score is the class-balanced sum of its token "
        "scores (default) or their mean (the paper's); causal LMs always take the mean",
    )


# A budget is a whole row count (>= 1) or a fraction (0 < b < 1); the schema says so exactly.
BUDGET_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    ],
    "description": "a count (a whole number >= 1) or a fraction (0 < budget < 1)",
}


class SelectionParams(Strict):
    budget: Annotated[float, WithJsonSchema(BUDGET_SCHEMA)] = Field(
        default=0.1, gt=0, allow_inf_nan=False
    )
    strategy: Literal["score+random", "score-only"] = "score+random"
    num_bins: int = Field(default=10, ge=1, le=1000)
    min_per_bin: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="fewer length bins when the score picks are few, so each bin gets this many "
        "(0: always num_bins, the paper's rule)",
    )

    @field_validator("budget")
    @classmethod
    def _whole_count(cls, value: float) -> float:
        if value >= 1 and not value.is_integer():
            raise ValueError("a budget of 1 or more is a row count and must be a whole number")
        return value


class JobCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["validation"]}, {"required": ["targets"]}]},
    )

    pool: str = Field(
        min_length=1,
        json_schema_extra={"pattern": REFERENCE_PATTERN},
        description="a dataset id (ds_...), a file:// path under a data root or a remote reference",
    )
    validation: Annotated[str | None, WithJsonSchema(_REFERENCE_SCHEMA)] = Field(
        default=None,
        min_length=1,
        description="the target examples: a dataset id (ds_...), a file:// path or a remote "
        "reference. Give this or `targets`, not both.",
    )
    targets: Annotated[list[DatasetReference] | None, WithJsonSchema(_TARGETS_SCHEMA)] = Field(
        default=None,
        min_length=MIN_TARGETS,
        max_length=MAX_TARGETS,
        description=f"{MIN_TARGETS} to {MAX_TARGETS} distinct validation sets (same forms as "
        "`validation`), scored in one multi-target job that shares the pool's validation-free "
        "work; results are per target (`?target=k`, 0-based in this order). Give this or "
        "`validation`, not both.",
    )
    model: str | None = Field(default=None, max_length=500, description="model name or folder")
    task: Literal["causal_lm", "token_classification"] = "causal_lm"
    method: Literal["tov", "random", "uncertainty", "less"] = "tov"
    tov: ToVParams = ToVParams()
    selection: SelectionParams = SelectionParams()
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_length: int = Field(default=512, ge=8, le=32768)
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="frozen base weights in bfloat16 (LoRA weights, the head and score "
        "differences stay float32) or everything in float32; auto: bfloat16 on a GPU that "
        "supports it, float32 elsewhere",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("validation", "targets", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:  # only an explicit null: an absent field keeps its default
            raise ValueError("must not be null; leave the field out instead")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> JobCreate:
        if len(str(self.metadata)) > 16_384:
            raise ValueError("metadata is larger than 16 KiB")
        if (self.validation is None) == (self.targets is None):
            given = "both were given" if self.validation is not None else "neither was given"
            raise ValueError(
                "give exactly one of `validation` (one validation set) or `targets` "
                f"({MIN_TARGETS} to {MAX_TARGETS} validation sets); {given}"
            )
        if self.targets is not None:
            for k, ref in enumerate(self.targets):
                first = self.targets.index(ref)
                if first < k:
                    raise ValueError(f"targets[{k}] repeats targets[{first}] ('{ref[:200]}')")
        return self

    def target_refs(self) -> list[str]:
        """The validation references in target order (one for a single-target job)."""
        if self.targets is not None:
            return list(self.targets)
        assert self.validation is not None  # the validator guarantees one of the two
        return [self.validation]


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
    validation: str = Field(description="the validation dataset id (of the first target)")
    targets: list[str] = Field(description="every target's validation dataset id, in order")
    k: int = Field(description="the number of targets (1 for a single validation set)")
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
