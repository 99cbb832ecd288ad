"""Typed views of the API's JSON. Unknown fields are kept (``model_extra``), so a newer server
never breaks an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

TERMINAL = ("succeeded", "failed", "cancelled")
ExportFormat = Literal["jsonl", "csv", "parquet"]
ResultKind = Literal["selection", "scores", "subset"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Dataset(_Model):
    """A validated dataset (uploaded, or registered by its server-side path)."""

    id: str
    name: str
    file_format: str
    row_format: str
    rows: int
    size_bytes: int
    sha256: str
    columns: list[str] = []
    created_at: datetime
    # A remote reference is fetched and validated after the answer: `validating`, then `ready`,
    # or `failed` with `error` and the row errors ({file, line|row, field, reason}).
    status: str = "ready"
    error: str | None = None
    errors: list[dict[str, Any]] | None = None


class DatasetPage(_Model):
    """One page of ``GET /v1/datasets``; pass ``next_cursor`` back for the next one (None on
    the last page). The API sends it in the ``X-Next-Cursor`` header beside a bare list."""

    items: list[Dataset]
    next_cursor: str | None = None


class Progress(_Model):
    stage: str | None = None
    fraction: float = 0.0
    rows_done: int = 0
    rows_total: int = 0
    eta_seconds: float | None = None
    message: str | None = None


class JobError(_Model):
    code: str | None = None
    detail: str | None = None


class Verify(_Model):
    """A job's verification: the request (holdout, seeds) and, once the job has verified, the
    held-out losses (mean NLL per loss-bearing token) of the base model, of fresh fine-tunes on
    the selection and on same-size random subsets, and the improvement over random."""

    holdout: float
    seeds: int
    error: str | None = None
    holdout_rows: int | None = None
    selected_rows: int | None = None
    base_loss: float | None = None
    selected_loss: float | None = None
    random_loss: float | None = None
    selected_losses: list[float] | None = None
    random_losses: list[float] | None = None
    improvement: float | None = None
    improvement_sd: float | None = None
    improvement_percent: float | None = None
    base_improvement: float | None = None
    seconds: float | None = None
    recipe: dict[str, Any] | None = None

    @property
    def reported(self) -> bool:
        """True once the report is in (not before the job is done, nor when it failed)."""
        return self.improvement is not None


class Job(_Model):
    """A selection job: its status, progress and (once succeeded) links to its results."""

    id: str
    status: str
    progress: Progress = Progress()
    pool: str
    validation: str
    targets: list[str] = []
    """Every target's validation dataset id, in order (one for a single-target job)."""
    k: int = 1
    """The number of targets; results of target k are fetched with ``target=k``."""
    model: str = ""
    task: str = ""
    method: str = ""
    params: dict[str, Any] = {}
    seed: int = 0
    metadata: dict[str, Any] = {}
    attempt: int = 0
    error: JobError | None = None
    stats: dict[str, Any] = {}
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: dict[str, str] = {}
    leak_count: int = 0  # pool rows the leakage check flagged (``Client.job_leaks``)
    notify: dict[str, Any] | None = None
    """The ``notify_url`` endpoint: webhook_id, url, and the secret in the creating answer."""
    verify: Verify | None = None
    """The verification the job asked for (``verify=``), with its report once done."""

    @property
    def done(self) -> bool:
        """True once the job is succeeded, failed or cancelled."""
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class JobPage(_Model):
    """One page of ``GET /v1/jobs``; pass ``next_cursor`` back for the next one."""

    items: list[Job]
    next_cursor: str | None = None


class Selection(_Model):
    """A selection made from a job's stored scores (``POST /v1/jobs/{id}/selections``)."""

    id: str
    job_id: str
    status: str
    target: int = 0
    budget: float
    strategy: str
    num_bins: int
    seed: int
    size: int
    is_default: bool = False
    error: str | None = None
    created_at: datetime


class HarmfulRow(_Model):
    """A pool row whose loss rose when the model was nudged toward the target."""

    index: int
    loss_before: float | None = None
    loss_after: float | None = None
    loss_increase: float | None = None
    score: float | None = None
    length: int = 0
    bin: int | None = None
    bin_rank: int | None = None
    selected: bool = False
    preview: str = ""


class HarmfulRows(_Model):
    """``GET /v1/jobs/{id}/harmful``: the largest loss increases first."""

    job_id: str
    target: int = 0
    explained: bool = True  # false: the job stored no losses (a method without them, an old job)
    rows_with_loss_increase: int = 0
    items: list[HarmfulRow]


class Leak(_Model):
    """A pool row that repeats, exactly or nearly, a validation or decontamination row."""

    pool_index: int
    target: int = 0
    source: str  # "validation" | "decontaminate"
    dataset: str  # the matched dataset's id
    match_index: int
    similarity: float
    kind: str  # "exact" | "near"
    excluded: bool  # never selected
    pool_preview: str = ""
    match_preview: str = ""


class LeakPage(_Model):
    """``GET /v1/jobs/{id}/leaks``: one page, in pool order."""

    items: list[Leak]
    next_cursor: str | None = None
    total: int = 0
    excluded_total: int = 0


class JobEvent(_Model):
    id: int | None = None
    """Increasing within a job: pass the last one as ``after`` for the next page (None from a
    server older than event paging)."""
    at: datetime
    kind: str
    attempt: int = 0
    message: str = ""


class ModelInfo(_Model):
    """A model the workers can run (``GET /v1/models``): a folder under the model roots."""

    name: str
    model_type: str | None = None
    architectures: list[str] = []
    parameters: int | None = None
    parameters_source: str | None = None
    """``safetensors`` (counted exactly), ``config`` (estimated) or None (unknown)."""
    has_tokenizer: bool = False


class ModelList(_Model):
    """``GET /v1/models``: the installed models and the one a job without ``model`` runs."""

    items: list[ModelInfo]
    default_model: str = ""
