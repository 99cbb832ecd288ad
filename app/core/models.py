"""ORM models. Postgres is the single source of truth; SQLite serves the embedded mode."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A random, unguessable id with a readable prefix (``job_3f9c...``)."""
    return f"{prefix}_{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"  # running, asked to cancel: its worker stops it at the next heartbeat
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStage(StrEnum):
    # Queued, not yet sent to the workers: a dataset it refers to is still `validating`.
    WAITING_FOR_DATASETS = "waiting_for_datasets"
    RESOLVE = "resolve"
    TRAIN = "train"
    SCORE = "score"
    SELECT = "select"
    VERIFY = "verify"  # fine-tuning on the selection and on random subsets (`verify` jobs)


TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
# An attempt owns the job in these (a cancelling job is its attempt's until the attempt stops).
LIVE_STATUSES = (JobStatus.RUNNING, JobStatus.CANCELLING)


class DatasetStatus(StrEnum):
    """A reference is fetched and validated after the answer (app.datasets.ingest)."""

    VALIDATING = "validating"
    READY = "ready"
    FAILED = "failed"


class Tenant(Base):
    __tablename__ = "tenant"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(20), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Dataset(Base):
    __tablename__ = "dataset"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    uri: Mapped[str] = mapped_column(Text)  # where the bytes are: artifact store or a data root
    file_format: Mapped[str] = mapped_column(String(20))  # jsonl | parquet | csv
    row_format: Mapped[str] = mapped_column(String(40))  # chat | prompt_completion | text | tokens
    rows: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # validating (uri is still the reference; the summary columns are placeholders) -> ready |
    # failed (`errors`: the {file, line|row, field, reason} list a synchronous 422 shows).
    status: Mapped[str] = mapped_column(String(20), default="ready", server_default="ready")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    # When the current validation run began: one `validating` past the deadline (its API process
    # died) is taken over by another (app.datasets.ingest.resume_stale).
    validation_started_at: Mapped[datetime | None] = mapped_column(default=None)
    validation_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Job(Base):
    __tablename__ = "job"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str] = mapped_column(String(64))
    pool_dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"))
    validation_dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"))  # the first target
    # Every target's validation dataset id, in order (a multi-target job has 2..16; None on jobs
    # created before targets existed: read it through app.jobs.service.target_dataset_ids).
    validation_dataset_ids: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    model: Mapped[str] = mapped_column(String(500))
    task: Mapped[str] = mapped_column(String(40))
    method: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # ToV + selection knobs
    seed: Mapped[int] = mapped_column(Integer, default=0)
    job_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)

    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED, index=True)
    stage: Mapped[str | None] = mapped_column(String(20), default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_total: Mapped[int] = mapped_column(BigInteger, default=0)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    error_code: Mapped[str | None] = mapped_column(String(60), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)

    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Pool rows the leakage check flagged (distinct, the most of any target; migration 0009).
    leak_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The verification of the selection (`verify` jobs, migration 0011): the report, or
    # {"error": ...} when verifying failed after a valid selection; None until published.
    verify_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobEvent(Base):
    __tablename__ = "job_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")


class ScoreChunk(Base):
    """Scores in chunks of float32 bytes: ~4 bytes a score (RELIABILITY.md, measured layouts)."""

    __tablename__ = "score_chunk"

    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    # Which of the job's targets (validation sets) these scores are for: 0..K-1.
    target: Mapped[int] = mapped_column(Integer, primary_key=True, default=0, server_default="0")
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_row: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    scores: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32, NaN = base subset
    lengths: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian int32
    flags: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)  # uint8; 1 = in U
    # Explanations (migration 0010; None for jobs before it or methods without them): each row's
    # mean loss per loss token under theta_bas and theta_val averaged over rounds (little-endian
    # float32, NaN = not scored), and its length bin and rank by score within it under the default
    # selection's settings (little-endian int32, -1 = none).
    loss_before: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    loss_after: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    bins: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    bin_ranks: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)


class Selection(Base):
    __tablename__ = "selection"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("sel"))
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    target: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 0..K-1
    budget: Mapped[float] = mapped_column(Float)
    strategy: Mapped[str] = mapped_column(String(40))
    num_bins: Mapped[int] = mapped_column(Integer)
    min_per_bin: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    seed: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    indices: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian int64
    scores: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32
    from_random: Mapped[bytes] = mapped_column(LargeBinary)  # uint8: 1 = random half
    # Why each row was picked (migration 0010; None before it): a score pick's length bin, rank by
    # score within it and its bin's score picks (little-endian int32 each, -1 for random picks).
    bins: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    bin_ranks: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    bin_quotas: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="ready", server_default="ready")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When a pending selection was last sent to the select queue (the reaper re-sends lost ones).
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    # Runs of a pending selection so far: past reselect_max_attempts it fails (worker.reselect).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class JobLeak(Base):
    """A pool row the leakage check flagged: its best match in one reference (migration 0009).

    Rows, not a JSON artifact: GET /v1/jobs/{id}/leaks pages them by a keyset on (target,
    pool_index, id), and re-selection reads the excluded pool indices of one target with an
    indexed query; a job has few leaks (a row each), so the table stays small."""

    __tablename__ = "job_leak"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    target: Mapped[int] = mapped_column(Integer, default=0)  # validation leaks are per target
    pool_index: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(20))  # "validation" | "decontaminate"
    dataset_id: Mapped[str] = mapped_column(String(40))  # the matched dataset (no FK: kept)
    match_index: Mapped[int] = mapped_column(BigInteger)
    similarity: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(10))  # "exact" | "near"
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    pool_preview: Mapped[str] = mapped_column(Text, default="")
    match_preview: Mapped[str] = mapped_column(Text, default="")


class JobShard(Base):
    """One shard of a staged job's scoring (worker/shards.py): claimed and leased on its own."""

    __tablename__ = "job_shard"

    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_batch: Mapped[int] = mapped_column(Integer)
    end_batch: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|running|done
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at (or in flight until then)
    DELIVERED = "delivered"  # the endpoint answered 2xx: never sent again
    FAILED = "failed"  # every attempt of the retry schedule failed


class Webhook(Base):
    """An endpoint events are signed and sent to: a tenant's (job_id None) or one job's
    `notify_url` (job_id set; it gets every event of that job)."""

    __tablename__ = "webhook"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("wh"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("job.id", ondelete="CASCADE"), default=None, index=True
    )
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The Standard Webhooks signing secret (whsec_<base64>): kept so the server can sign, shown
    # to the tenant once, in the answer that created it.
    secret: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookEvent(Base):
    """The outbox: one row per event, written in the transaction of the state change it tells."""

    __tablename__ = "webhook_event"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("msg"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)  # no FK
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to one endpoint: sent until the endpoint answers 2xx, on a back-off schedule."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (UniqueConstraint("event_id", "webhook_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dlv"))
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_event.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhook.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(
        String(20), default=WebhookDeliveryStatus.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow, index=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # Every attempt: {"attempt", "at", "status_code", "error", "duration_ms"}.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
