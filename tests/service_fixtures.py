"""Fixtures for tests of the service on the real PostgreSQL and Redis.

Each test session gets its own throw-away database (migrated with Alembic) and its own queue name,
so it never disturbs anything else on the shared servers.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sqlalchemy.orm import Session

ADMIN_DSN = os.environ.get("TOV_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TOV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reset_caches() -> None:
    from app.core.config import get_settings
    from app.core.db import get_engine, get_sessionmaker
    from app.core.queue import producer

    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for cached in (get_settings, get_engine, get_sessionmaker, producer):
        cached.cache_clear()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database; dropped at the end."""
    name = f"tov_test_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    from app.migrate import upgrade_database

    upgrade_database(url)
    yield url
    _reset_caches()
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def service_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("service")
    dirs = {name: root / name for name in ("artifacts", "data", "models", "standin-models")}
    for path in dirs.values():
        path.mkdir()
    # The API refuses a job whose model is not installed: a stand-in of the default model, for
    # tests whose jobs no real engine runs. In a second root, so that the real tiny model
    # (`installed_tiny_model`, in the first root) wins wherever a test builds it.
    (dirs["standin-models"] / "tiny-llama").mkdir()
    (dirs["standin-models"] / "tiny-llama" / "config.json").write_text('{"model_type": "llama"}')
    return dirs


@pytest.fixture(scope="session")
def service_env(pg_database: str, service_dirs: dict[str, Path]) -> Iterator[dict[str, str]]:
    """The TOV_* environment of the API and the workers for this test session."""
    env = {
        "TOV_DATABASE_URL": pg_database,
        "TOV_BROKER_URL": REDIS_URL,
        "TOV_TASK_QUEUE": f"tov_test_{secrets.token_hex(4)}",
        "TOV_ARTIFACT_ROOT": str(service_dirs["artifacts"]),
        # Read by every tenant (per-tenant roots: tests/security/test_tenant_roots.py).
        "TOV_SHARED_DATA_ROOTS": json.dumps([str(service_dirs["data"])]),
        "TOV_MODEL_ROOTS": json.dumps(
            [str(service_dirs["models"]), str(service_dirs["standin-models"])]
        ),
        "TOV_DEFAULT_MODEL": "tiny-llama",
        "TOV_HEARTBEAT_SECONDS": "1",
        "TOV_LEASE_SECONDS": "10",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reset_caches()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _reset_caches()


@pytest.fixture()
def db_session(service_env: dict[str, str]) -> Iterator[Session]:
    from app.core.db import get_sessionmaker

    with get_sessionmaker()() as session:
        yield session


def make_key(tenant: str) -> str:
    from app.core.auth import create_key
    from app.core.db import get_sessionmaker

    with get_sessionmaker()() as session:
        _, key = create_key(session=session, tenant_name=tenant)
        session.commit()
    return key


@pytest.fixture()
def api_key(service_env: dict[str, str]) -> str:
    return make_key(f"tenant-{secrets.token_hex(3)}")


@pytest.fixture()
def client(service_env: dict[str, str]) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def installed_tiny_model(service_dirs: dict[str, Path]) -> Path:
    """The tiny causal LM copied under the service's model root as 'tiny-llama'."""
    from tests.tiny_models import build_tiny_causal_lm

    dest = service_dirs["models"] / "tiny-llama"
    if not dest.exists():
        build_tiny_causal_lm(dest)
    return dest


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def copy_into(src: Path, dest_dir: Path) -> Path:
    target = dest_dir / src.name
    shutil.copy(src, target)
    return target


def finish_with_results(
    session: Session, job_id: str, scores: np.ndarray, picked: list[int], from_random: list[int]
) -> str:
    """Mark a job succeeded with `scores` (lengths 9, no base subset) and a default selection of
    the rows `picked`, as a worker would have published them. Returns the selection's id."""
    from app.core.models import Job
    from app.results.scores import write_scores
    from app.results.selections import add_selection

    job = session.get(Job, job_id)
    assert job is not None
    job.status, job.progress, job.rows_done = "succeeded", 1.0, len(scores)
    scores = np.asarray(scores, dtype="<f4")
    write_scores(
        session=session,
        job_id=job_id,
        scores=scores,
        lengths=np.full(len(scores), 9, "<i4"),
        base_indices=np.zeros(0, dtype=np.int64),
    )
    selection = add_selection(
        session=session,
        job_id=job_id,
        indices=np.array(picked, dtype=np.int64),
        scores=scores[picked],
        from_random=np.array(from_random, dtype=np.uint8),
        budget=len(picked),
        strategy="score+random",
        num_bins=2,
        seed=0,
        is_default=True,
    )
    session.flush()
    return selection.id
