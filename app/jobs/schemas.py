"""Job schemas: the body of POST /v1/jobs, its knobs, and the job as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from app.schemas import REFERENCE_PATTERN, Strict
from tov_plan.rules import DEFAULT_LEARNING_RATE, DEFAULT_NUM_BINS, DEFAULT_STRATEGY

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
    learning_rate: float = Field(default=DEFAULT_LEARNING_RATE, gt=0, le=1)
    batch_size: int = Field(default=16, ge=1, le=1024)
    score_fn: Literal["improvement", "absolute", "positive"] = "improvement"
    lora: LoraParams = LoraParams()
    tokens_per_batch: int = Field(default=8192, ge=128, le=1_048_576)
    train_tokens_per_micro_batch: int = Field(
        default=4096,
        ge=128,
        le=1_048_576,
        description="padded tokens per training micro-batch: a larger batch accumulates its "
        "gradients over several micro-batches (the same update, less memory, smaller matmuls)",
    )
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
    strategy: Literal["score+random", "score-only", "score+diverse"] = Field(
        default=DEFAULT_STRATEGY,
        description="score-only (default: the large quality benchmark's evidence), score+random "
        "(the paper's default) or score+diverse",
    )
    num_bins: int = Field(
        default=DEFAULT_NUM_BINS,
        ge=1,
        le=1000,
        description="equal-count length bins the score picks are spread over (the paper's 10); "
        "1 ranks the whole pool at once, better for short-answer targets",
    )
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


MAX_DECONTAMINATE = 8  # decontamination references a job may name


class LeakageParams(Strict):
    """The leakage check (docs/engine.md): pool rows that repeat, exactly or nearly, a validation
    row or a row of a `decontaminate_against` dataset are listed (GET /v1/jobs/{id}/leaks)."""

    validation: Literal["report", "exclude"] = Field(
        default="report",
        description="rows repeating a validation row: listed and still selectable (report), or "
        "never selected (exclude)",
    )
    decontaminate: Literal["report", "exclude"] = Field(
        default="exclude", description="rows repeating a decontamination row (default exclude)"
    )
    threshold: float = Field(
        default=0.6,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="least Jaccard similarity of word 3-gram sets that counts as a near duplicate",
    )


class VerifyParams(Strict):
    """Verification of the selection (docs/users.md): hold `holdout` of the validation rows out
    of selection, then fine-tune fresh LoRA adapters (one fixed short recipe) on the selection and
    on same-size uniform random subsets, `seeds` times each, and compare their held-out loss."""

    holdout: float = Field(
        default=0.25,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="share of the validation rows held out of selection (at least one row on "
        "each side)",
    )
    seeds: int = Field(
        default=2, ge=1, le=10, description="fine-tuning seeds per arm; the spread is over these"
    )


class VerifyRead(BaseModel):
    """A job's verification: the request, and the report once the job has verified (losses are
    mean NLL per loss-bearing token on the held-out validation rows)."""

    holdout: float
    seeds: int
    error: str | None = Field(
        default=None, description="why verification failed (the selection is still published)"
    )
    holdout_rows: int | None = None
    selected_rows: int | None = None
    base_loss: float | None = Field(default=None, description="the base model's held-out loss")
    selected_loss: float | None = Field(
        default=None, description="held-out loss after fine-tuning on the selection (seed mean)"
    )
    random_loss: float | None = Field(
        default=None, description="held-out loss after fine-tuning on random rows (seed mean)"
    )
    selected_losses: list[float] | None = None
    random_losses: list[float] | None = None
    improvement: float | None = Field(
        default=None, description="random_loss - selected_loss: > 0 when the selection helps more"
    )
    improvement_sd: float | None = Field(
        default=None, description="sample sd of the paired improvement over seeds (0 with one)"
    )
    improvement_percent: float | None = Field(
        default=None, description="the improvement as a share of random_loss, in percent"
    )
    base_improvement: float | None = Field(default=None, description="base_loss - selected_loss")
    seconds: float | None = None
    recipe: dict[str, Any] | None = Field(
        default=None, description="the fixed fine-tuning recipe (epochs, batch size, LR, LoRA)"
    )


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
    method: Literal["tov", "random", "uncertainty", "less", "rds"] = "tov"
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
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="recompute activations in the backward instead of keeping them (training "
        "passes only): much less training memory for about a third more training time; auto: "
        "on with a GPU, off on CPU",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    decontaminate_against: list[DatasetReference] = Field(
        default_factory=list,
        max_length=MAX_DECONTAMINATE,
        description="datasets (ids, file:// paths or remote references, as `pool`) no selected "
        "row may repeat, e.g. your own test set: exact and near duplicates are found and, by "
        "default, never selected",
    )
    leakage: LeakageParams = LeakageParams()
    verify: VerifyParams | None = Field(
        default=None,
        description="verify the selection on held-out validation rows (single-target jobs): "
        'e.g. {"holdout": 0.25, "seeds": 2}; the report is the job\'s `verify`',
    )
    dry_run: bool = Field(
        default=False,
        description="true: no job; the answer (200) is the estimate: rows and tokens counted "
        "with the model's tokenizer, passes planned, pool-cache hits, predicted wall time and "
        "peak memory on the workers' device class, and whether the job fits it",
    )
    notify_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="a receiver for this job's webhook events (job.succeeded, job.failed, "
        "job.cancelled, selection.succeeded), signed with a secret of its own that the answer "
        "creating the job shows once (`notify.secret`); the SSRF rules of https:// references",
    )

    @field_validator("validation", "targets", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:  # only an explicit null: an absent field keeps its default
            raise ValueError("must not be null; leave the field out instead")
        return value

    @field_validator("verify")
    @classmethod
    def _single_target(cls, value: VerifyParams | None, info: ValidationInfo) -> object:
        if value is not None and info.data.get("targets") is not None:
            raise ValueError(
                "verify works on single-target jobs: give one `validation`, not `targets`"
            )
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


class JobNotify(BaseModel):
    webhook_id: str = Field(description="its deliveries: GET /v1/webhooks/{webhook_id}/deliveries")
    url: str
    secret: str | None = Field(
        default=None, description="the signing secret (whsec_...): in the creating answer only"
    )


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
    leak_count: int = Field(
        default=0, description="pool rows the leakage check flagged (GET /v1/jobs/{id}/leaks)"
    )
    notify: JobNotify | None = Field(default=None, description="the job's notify_url endpoint")
    verify: VerifyRead | None = Field(
        default=None, description="the verification the job asked for, with its report when done"
    )


class JobList(BaseModel):
    items: list[JobRead]
    next_cursor: str | None


class DryRunRead(BaseModel):
    """The answer of POST /v1/jobs with `"dry_run": true` (docs/api.md shows one)."""

    dry_run: Literal[True]
    model: str
    method: str
    device_class: str = Field(description="the workers' kind (TOV_DEVICE_CLASS)")
    device: str
    precision: str = Field(description="the precision the job would run in on that device")
    rows: dict[str, Any] = Field(description="pool, validation, budget, base_size |U|, rounds L")
    tokens: dict[str, Any] = Field(
        description="per set: tokens and loss-bearing tokens after truncation, truncated rows"
    )
    passes: dict[str, Any] = Field(
        description="forward and backward row passes, batches and tokens; `phases` itemised"
    )
    pool_cache: dict[str, Any] = Field(
        description="whether the tokenised pool and the base rounds are cached already"
    )
    time: dict[str, Any] = Field(description="predicted wall seconds, by part")
    memory: dict[str, Any] = Field(description="predicted peak bytes, its parts, and advice")
    fits: bool = Field(description="the predicted peak fits the device's memory")
    notes: list[str]
