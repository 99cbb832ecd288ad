"""RFC 9457 problem details: one error base class and one set of handlers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    status = 400
    title = "Bad request"
    code = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class InvalidInput(ApiError):
    status, title, code = 422, "Invalid input", "invalid_input"


class Unauthorized(ApiError):
    status, title, code = 401, "Unauthorized", "unauthorized"


class NotFound(ApiError):
    status, title, code = 404, "Not found", "not_found"


class Conflict(ApiError):
    status, title, code = 409, "Conflict", "conflict"


class PayloadTooLarge(ApiError):
    status, title, code = 413, "Payload too large", "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, title, code = 415, "Unsupported media type", "unsupported_media_type"


class TooManyRequests(ApiError):
    status, title, code = 429, "Too many requests", "too_many_requests"


class ServiceUnavailable(ApiError):
    status, title, code = 503, "Service unavailable", "unavailable"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    code: str,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://tov-select.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(
            exc.status,
            exc.title,
            exc.detail,
            code=exc.code,
            instance=request.url.path,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "reason": err.get("msg", "")}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        return problem(
            422,
            "Invalid request",
            detail,
            code="invalid_request",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(
            exc.status_code,
            str(exc.detail),
            str(exc.detail),
            code="http_error",
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable on %s: %s", request.url.path, type(exc).__name__)
        return problem(
            503,
            "Service unavailable",
            "The database is unavailable; retry shortly.",
            code="database_unavailable",
            instance=request.url.path,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(Exception)
    async def _unknown(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return problem(
            500,
            "Internal error",
            "internal error",
            code="internal_error",
            instance=request.url.path,
        )
