"""RFC 9457 problem details: one error base class and one set of handlers."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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
    """413. The connection is closed after the answer: the server reads no more of the body."""

    status, title, code = 413, "Payload too large", "payload_too_large"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Connection", "close")


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
        "code": {"type": "string"},
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
            code="invalid_request",
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
            code="http_error",
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
            code="invalid_value",
            instance=request.url.path,
        )

    @app.exception_handler(IntegrityError)
    async def _conflict(request: Request, exc: Exception) -> JSONResponse:
        logger.info("integrity error on %s", request.url.path)
        return problem(
            409,
            "Conflict",
            "The request conflicts with the current state of a resource; retry or change it.",
            code="conflict",
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
