"""Settings: the only place that reads the environment (prefix ``TOV_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

STATE_DIR = Path(".tov")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOV_", extra="ignore")

    # Embedded default: a SQLite file and a broker that needs no server.
    database_url: str = f"sqlite:///{STATE_DIR}/tov.db"
    broker_url: str = f"sqla+sqlite:///{STATE_DIR}/broker.db"
    artifact_root: Path = STATE_DIR / "artifacts"
    # Where datasets, trained rounds and shard scores live (app/core/artifacts.py): a folder,
    # file:// or s3://bucket/prefix; unset: artifact_root itself. With a store set, artifact_root
    # is each process's local scratch (uploads in flight, engine folders, downloaded inputs).
    artifact_store: str | None = None
    # The S3 store's endpoint (MinIO: http://minio:9000) and credentials; unset: AWS and
    # botocore's usual chain (AWS_* variables, instance role).
    artifact_s3_endpoint_url: str | None = None
    artifact_s3_region: str | None = None
    artifact_s3_access_key_id: str | None = None
    artifact_s3_secret_access_key: SecretStr | None = None
    # Server-side dataset paths must resolve (after realpath) under a root of their tenant's
    # (app/datasets/sources/tenancy.py). Per tenant: `{tenant}` in an entry is replaced by the
    # tenant's name; an entry without it gets the name appended (/srv/data -> /srv/data/acme).
    data_roots: list[Path] = []
    # Folders every tenant may read: public reference data only (the embedded demo's by default).
    shared_data_roots: list[Path] = Field(default_factory=lambda: [Path("demo/data").resolve()])
    # Model names resolve to folders under these roots; no hub access.
    model_roots: list[Path] = Field(default_factory=lambda: [Path(".cache/models").resolve()])
    default_model: str = "smollm2-135m-instruct"

    max_upload_bytes: int = 256 * 1024 * 1024
    # Per-tenant limits (app/core/limits.py, app/datasets/quota.py); 0 turns one off.
    # Requests a second per tenant and API process, and how many may come at once.
    rate_limit_per_second: float = Field(default=1000.0, ge=0)
    rate_limit_burst: int = Field(default=2000, ge=0)
    max_active_jobs_per_tenant: int = Field(default=20, ge=0)  # queued + running jobs
    max_json_body_bytes: int = Field(default=1024 * 1024, ge=1)  # every JSON request body
    # Dataset uploads and registrations a minute per tenant and API process.
    uploads_per_minute: float = Field(default=600.0, ge=0)
    # Bytes of a tenant's datasets kept in the artifact store (uploads and remote copies).
    max_stored_bytes_per_tenant: int = Field(default=0, ge=0)
    # https:// dataset references may name only these hosts ("*.example.com", "*" for any);
    # empty: remote references are refused. Addresses must still be public
    # (app/datasets/sources/network.py).
    remote_hosts: list[str] = []
    max_line_bytes: int = 1024 * 1024
    max_rows: int = 10_000_000

    # Reliability: a worker holds a lease it renews; the reaper requeues expired ones.
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    max_attempts: int = 3
    task_queue: str = "tov"
    reaper_seconds: float = 10.0  # how often each worker looks for lost or unpublished jobs
    republish_seconds: float = 600.0  # a queued job not started by then is sent again
    # No stuck job (worker.watchdog): an attempt whose progress has not changed for this long is
    # ended and retried (up to max_attempts), then failed ("stalled"); 0: off.
    progress_timeout_seconds: float = 1800.0
    # An attempt running longer than this fails the job ("run_timeout"); 0: off.
    max_run_seconds: float = 0.0
    # A pending re-selection is re-sent this long after its last send; after this many runs that
    # did not finish it, it fails.
    reselect_resend_seconds: float = 60.0
    reselect_max_attempts: int = 3

    # The function a worker calls to run a job. Fault tests swap in a fast stand-in; never in use.
    engine_entrypoint: str = "tov_engine:run_selection"

    # The memory a worker's job may use on CPU, in GiB (tov_plan.memory); unset: MemAvailable on
    # CPU, the GPU's free memory on CUDA. A job predicted to need more fails before it loads
    # anything ("insufficient_memory").
    worker_memory_gb: float | None = Field(default=None, gt=0)

    # Scale-out: a ToV job whose scored rows exceed this is scored in shards of about this many
    # rows that every worker on the queue takes in parallel (0: one worker scores the whole pool).
    score_shard_rows: int = 0
    # At most this many other workers are asked to help with one job's shards (one message each;
    # a helper keeps claiming until none is left, so one per expected idle worker is enough).
    max_shard_helpers: int = 8
    # Reuse tokenised pools and validation-free base rounds across jobs (artifact_root/pool-cache).
    pool_cache: bool = True
    # What the workers run on (tov_plan.cost.DEVICE_CLASSES: cpu, h100, a100, l4): a worker's
    # own kind, and on the API the kind dry runs predict wall time and memory for.
    device_class: Literal["cpu", "h100", "a100", "l4"] = "cpu"

    port: int = 8000

    @property
    def select_queue(self) -> str:
        """Re-selections from stored scores: cheap CPU work, kept off the GPU queue."""
        return f"{self.task_queue}.select"

    log_level: str = "INFO"

    # s3:// dataset references (fsspec/s3fs), copied into the artifact store; all three lists
    # empty: s3:// is refused. Credentials unset: botocore's usual chain. Per tenant: a bucket
    # here ("*": any) lets each tenant read its own prefix s3://BUCKET/NAME/ only; a template in
    # s3_prefixes ("s3://bucket/path/{tenant}/") likewise. Shared prefixes: every tenant reads.
    s3_buckets: list[str] = []
    s3_prefixes: list[str] = []
    s3_shared_prefixes: list[str] = []
    s3_endpoint_url: str | None = None  # e.g. https://minio.internal:9000; unset: AWS
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_anonymous: bool = False  # public buckets, unsigned requests
    # The endpoint must resolve to public addresses unless the operator opts in here (MinIO on a
    # private network); users only name buckets and keys, never hosts.
    s3_allow_private_endpoint: bool = False
    # hf://datasets/OWNER/NAME/PATH references, offline only: a Hugging Face hub cache folder
    # (HF_HUB_CACHE layout) filled beforehand; unset: hf:// is refused.
    hf_cache: Path | None = None
    # /metrics asks for `Authorization: Bearer <token>` when this is set; unset: open.
    metrics_token: SecretStr | None = None

    # Webhooks (app/webhooks, worker/webhooks.py). Receivers must be https:// hosts on this
    # allow-list ("*.example.com", "*": any) resolving to public addresses (the SSRF rules of
    # https:// references); webhook_allow_insecure also lets http:// and private or loopback
    # receivers through (development, tests, a receiver on the operator's own network).
    webhook_hosts: list[str] = ["*"]
    webhook_allow_insecure: bool = False
    # Seconds to wait before each attempt (the first after the event, each next after the one
    # before); past the last the delivery fails. Default: the Standard Webhooks schedule, 27.6 h.
    webhook_retry_schedule: list[float] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)


@lru_cache
def get_settings() -> Settings:
    return Settings()
