"""RFC 9457 problem details: one error base class, one set of handlers, and the one list of
error codes (``ErrorCode``) that problem bodies and failed jobs carry."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ErrorCode(StrEnum):
    """Every ``code`` the service answers with: in a problem body (with its HTTP status) and in
    a failed or cancelled job's ``error.code``. Stable snake_case strings that clients may
    branch on; new ones are added here, and an existing one never changes its meaning."""

    BAD_REQUEST = "bad_request"  # 400
    UNAUTHORIZED = "unauthorized"  # 401: no, an unknown or a revoked API key
    NOT_FOUND = "not_found"  # 404: no such resource (for this tenant), or no such path
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405 (Allow names the path's methods)
    CONFLICT = "conflict"  # 409: not now (e.g. no results yet), or a reused Idempotency-Key
    PAYLOAD_TOO_LARGE = "payload_too_large"  # 413
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
    INVALID_REQUEST = "invalid_request"  # 422: the body or query does not fit the schema
    INVALID_INPUT = "invalid_input"  # 422: well-formed but refused (bad rows, unknown model)
    INVALID_VALUE = "invalid_value"  # 422: a value the database cannot store (NUL, range)
    TOO_MANY_REQUESTS = "too_many_requests"  # 429: the request rate limit (Retry-After)
    QUOTA_EXCEEDED = "quota_exceeded"  # 429: a tenant quota (active jobs) is used up
    HTTP_ERROR = "http_error"  # any other 4xx/5xx status from the HTTP layer
    INTERNAL_ERROR = "internal_error"  # 500
    UNAVAILABLE = "unavailable"  # 503
    DATABASE_UNAVAILABLE = "database_unavailable"  # 503 (Retry-After)
    NOT_READY = "not_ready"  # 503 from /readyz
    # A failed or cancelled job's error.code (GET /v1/jobs/{id}), not an HTTP answer:
    CANCELLED = "cancelled"
    INVALID_DATASET = "invalid_dataset"  # a dataset the job waited for failed validation
    DATA_ERROR = "data_error"  # the pool or a validation set cannot be read or encoded
    MODEL_ERROR = "model_error"  # the model cannot be found or loaded
    CONFIG_ERROR = "config_error"  # the job's parameters cannot run
    CHECKPOINT_ERROR = "checkpoint_error"  # a stored checkpoint is unusable
    INSUFFICIENT_MEMORY = "insufficient_memory"  # the job's predicted peak exceeds the device's
    ENGINE_ERROR = "engine_error"  # any other failure the engine reports
    SHARD_FAILED = "shard_failed"  # a scoring shard failed on every attempt
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # the attempt cap was reached
    STALLED = "stalled"  # no progress in TOV_PROGRESS_TIMEOUT_SECONDS, attempts used up
    RUN_TIMEOUT = "run_timeout"  # an attempt ran past TOV_MAX_RUN_SECONDS


HTTP_STATUS_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}
CODES = frozenset(c.value for c in ErrorCode)
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def job_error_code(raw: str | None) -> str | None:
    """A job's stored error code as the API shows it. Older workers stored the engine's
    exception class name (``DataError``); those map to their ``ErrorCode``, as does any other
    CamelCase name (to ``engine_error`` when it is not one). Other strings pass unchanged."""
    if raw is None or raw in CODES:
        return raw
    if raw[:1].isupper():
        snake = _CAMEL.sub("_", raw).lower()
        return snake if snake in CODES else ErrorCode.ENGINE_ERROR.value
    return raw


class ApiError(Exception):
    status = 400
    title = "Bad request"
    code: ErrorCode = ErrorCode.BAD_REQUEST

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
    status, title, code = 422, "Invalid input", ErrorCode.INVALID_INPUT


class Unauthorized(ApiError):
    status, title, code = 401, "Unauthorized", ErrorCode.UNAUTHORIZED


class NotFound(ApiError):
    status, title, code = 404, "Not found", ErrorCode.NOT_FOUND


class Conflict(ApiError):
    status, title, code = 409, "Conflict", ErrorCode.CONFLICT


class PayloadTooLarge(ApiError):
    """413. The connection is closed after the answer: the server reads no more of the body."""

    status, title, code = 413, "Payload too large", ErrorCode.PAYLOAD_TOO_LARGE

    def __init__(self, detail: str, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Connection", "close")


class UnsupportedMediaType(ApiError):
    status, title, code = 415, "Unsupported media type", ErrorCode.UNSUPPORTED_MEDIA_TYPE


class TooManyRequests(ApiError):
    status, title, code = 429, "Too many requests", ErrorCode.TOO_MANY_REQUESTS


class QuotaExceeded(TooManyRequests):
    """429 for a used-up tenant quota (active jobs), told apart from the request rate limit."""

    title, code = "Quota exceeded", ErrorCode.QUOTA_EXCEEDED


class ServiceUnavailable(ApiError):
    status, title, code = 503, "Service unavailable", ErrorCode.UNAVAILABLE


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    code: ErrorCode | str,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://tov-select.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": str(code),
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return JSONResponse(
        _printable(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _printable(value: Any) -> Any:
    """The problem with every string made encodable: a detail may quote what the client sent,
    and a lone surrogate (valid in a JSON escape, not in UTF-8) must not turn a 4xx into a 500."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {
            "type": "string",
            "enum": [c.value for c in ErrorCode],
            "description": "A stable error code (README: Error codes).",
        },
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Precise problems, e.g. {file, line|row, field, reason} for datasets.",
            "items": {"type": "object"},
        },
    },
    "required": ["type", "title", "status", "detail", "code"],
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def document_problems(app: FastAPI) -> None:
    """Describe the error answers in the OpenAPI document: every operation may answer a problem
    (RFC 9457, application/problem+json); 422 is a problem too, not FastAPI's default shape."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        answer = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for path_item in schema.get("paths", {}).values():
            for method, operation in path_item.items():
                if method not in HTTP_METHODS:
                    continue
                responses = operation.setdefault("responses", {})
                responses["422"] = {"description": "Invalid request", **answer}
                responses.setdefault("default", {"description": "A problem (RFC 9457)", **answer})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _routes(app: FastAPI) -> list[Any]:
    """Every route of the app, those of included routers too."""
    found, stack = [], list(app.routes)
    while stack:
        route = stack.pop()
        inner = getattr(route, "original_router", None)
        if inner is not None:
            stack.extend(inner.routes)
        else:
            found.append(route)
    return found


def allowed_methods(app: FastAPI, scope: MutableMapping[str, Any]) -> list[str]:
    """The methods some route accepts for this request's path."""
    methods: set[str] = set()
    for route in _routes(app):
        route_methods = getattr(route, "methods", None)
        if not route_methods:
            continue
        match, _ = route.matches({**scope, "method": next(iter(route_methods))})
        if match == Match.FULL:
            methods |= set(route_methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    document_problems(app)

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
            code=ErrorCode.INVALID_REQUEST,
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the first route's methods; RFC 9110 wants all of the path's.
            allowed = allowed_methods(app, request.scope)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return problem(
            exc.status_code,
            str(exc.detail),
            str(exc.detail),
            code=HTTP_STATUS_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR),
            instance=request.url.path,
            headers=headers or None,
        )

    @app.exception_handler(DataError)
    async def _bad_value(request: Request, exc: Exception) -> JSONResponse:
        # The database refused a value the request carried (a NUL byte, a number out of range):
        # the client's fault, not an outage.
        logger.info("database refused a value on %s: %s", request.url.path, type(exc).__name__)
        return problem(
            422,
            "Invalid input",
            "A value in the request cannot be stored (e.g. it contains a NUL character or is "
            "out of range).",
            code=ErrorCode.INVALID_VALUE,
            instance=request.url.path,
        )

    @app.exception_handler(IntegrityError)
    async def _conflict(request: Request, exc: Exception) -> JSONResponse:
        logger.info("integrity error on %s", request.url.path)
        return problem(
            409,
            "Conflict",
            "The request conflicts with the current state of a resource; retry or change it.",
            code=ErrorCode.CONFLICT,
            instance=request.url.path,
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable on %s: %s", request.url.path, type(exc).__name__)
        return problem(
            503,
            "Service unavailable",
            "The database is unavailable; retry shortly.",
            code=ErrorCode.DATABASE_UNAVAILABLE,
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
            code=ErrorCode.INTERNAL_ERROR,
            instance=request.url.path,
        )
