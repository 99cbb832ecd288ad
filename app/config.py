"""Settings: the only place that reads the environment (prefix ``TOV_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

STATE_DIR = Path(".tov")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOV_", extra="ignore")

    # Embedded default: a SQLite file and a broker that needs no server.
    database_url: str = f"sqlite:///{STATE_DIR}/tov.db"
    broker_url: str = f"sqla+sqlite:///{STATE_DIR}/broker.db"
    artifact_root: Path = STATE_DIR / "artifacts"
    # Server-side dataset paths must resolve (after realpath) under one of these.
    data_roots: list[Path] = Field(default_factory=lambda: [Path("demo/data").resolve()])
    # Model names resolve to folders under these roots; no hub access.
    model_roots: list[Path] = Field(default_factory=lambda: [Path(".cache/models").resolve()])
    default_model: str = "smollm2-135m-instruct"

    max_upload_bytes: int = 256 * 1024 * 1024
    # https:// dataset references may name only these hosts ("*.example.com", "*" for any);
    # empty: remote references are refused. Addresses must still be public (app/remote.py).
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

    # The function a worker calls to run a job. Fault tests swap in a fast stand-in; never in use.
    engine_entrypoint: str = "tov_engine:run_selection"

    port: int = 8000

    @property
    def select_queue(self) -> str:
        """Re-selections from stored scores: cheap CPU work, kept off the GPU queue."""
        return f"{self.task_queue}.select"

    log_level: str = "INFO"


@lru_cache
def get_settings() -> Settings:
    return Settings()
