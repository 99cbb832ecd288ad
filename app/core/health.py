"""Liveness and readiness: /healthz, and /readyz (checks the database and the broker)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.core.db import get_engine
from app.core.errors import PROBLEM_JSON
from app.core.queue import producer

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_ok() -> bool:
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _broker_ok() -> bool:
    try:
        with producer().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


@router.get("/readyz")
def readyz() -> JSONResponse:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = ", ".join(name for name, ok in checks.items() if not ok)
    body = {
        "type": "https://tov-select.dev/problems/not_ready",
        "title": "Service unavailable",
        "status": 503,
        "detail": f"Not ready: {down} unavailable.",
        "code": "not_ready",
        "instance": "/readyz",
        "checks": checks,
    }
    return JSONResponse(
        body, status_code=503, media_type=PROBLEM_JSON, headers={"Retry-After": "2"}
    )
