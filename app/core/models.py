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
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="ready", server_default="ready")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When a pending selection was last sent to the select queue (the reaper re-sends lost ones).
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    # Runs of a pending selection so far: past reselect_max_attempts it fails (worker.reselect).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


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
