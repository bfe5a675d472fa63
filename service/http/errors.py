"""API errors: every failure answers JSON {"error": {"code", "message"}} with its status."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from service import shapes
from service.http.services import services
from service.jira.errors import (
    JiraAuthError,
    JiraError,
    JiraRateLimitedError,
    JiraUnavailableError,
)
from service.model import InvalidKeyError, InvalidProjectIdError
from service.storage.pool import DatabaseUnavailableError

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER = "5"
CLIENT_GONE = 499
JIRA_RETRY_AFTER = 30.0


class ApiError(Exception):
    """A failure the caller can act on, with a stable code."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class ErrorCode(StrEnum):
    """Every code an error answers: stable, for callers to branch on. The OpenAPI document
    lists, per operation and status, the members it can answer."""

    BAD_REQUEST = "bad_request"
    INVALID_KEY = "invalid_key"
    INVALID_PROJECT_ID = "invalid_project_id"
    MISSING_KEYS = "missing_keys"
    TOO_MANY_KEYS = "too_many_keys"
    INVALID_MAX_AGE = "invalid_max_age"
    INVALID_LIMIT = "invalid_limit"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_FROM = "invalid_from"
    INVALID_ID = "invalid_id"
    INVALID_BODY = "invalid_body"
    INVALID_URL = "invalid_url"
    HOST_NOT_ALLOWED = "host_not_allowed"
    UNUSABLE_PAYLOAD = "unusable_payload"
    UNAUTHORIZED = "unauthorized"
    INVALID_SIGNATURE = "invalid_signature"
    MISSING_SIGNATURE = "missing_signature"
    FORBIDDEN = "forbidden"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    WEBHOOKS_DISABLED = "webhooks_disabled"
    NOT_FOUND = "not_found"
    NOT_CACHED = "not_cached"
    ISSUE_NOT_FOUND = "issue_not_found"
    LINK_NOT_FOUND = "link_not_found"
    DEAD_LETTER_NOT_FOUND = "dead_letter_not_found"
    SUBSCRIPTION_NOT_FOUND = "subscription_not_found"
    SUBSCRIPTION_LIMIT = "subscription_limit"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TIMEOUT = "body_timeout"
    CURSOR_EXPIRED = "cursor_expired"
    BODY_TOO_LARGE = "body_too_large"
    URI_TOO_LONG = "uri_too_long"
    HEADERS_TOO_LARGE = "headers_too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    JIRA_AUTH_FAILED = "jira_auth_failed"
    JIRA_ERROR = "jira_error"
    UNAVAILABLE = "unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    JIRA_UNAVAILABLE = "jira_unavailable"
    JIRA_SLOW = "jira_slow"
    JIRA_NOT_CONFIGURED = "jira_not_configured"
    TOO_MANY_STREAMS = "too_many_streams"
    SHUTTING_DOWN = "shutting_down"
    HTTP_ERROR = "http_error"


_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.BODY_TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


class Unauthorized(ApiError):
    """No token, or one that does not open the route; the answer names the kinds it takes."""

    def __init__(self, problem: str, accepted: str) -> None:
        super().__init__(
            401,
            ErrorCode.UNAUTHORIZED,
            f"{problem}; send {accepted}",
            {"WWW-Authenticate": 'Bearer realm="api"'},
        )


class InsufficientScope(ApiError):
    """A known client whose scopes do not open the route."""

    def __init__(self, client: str, scope: str) -> None:
        message = f"client {client!r} lacks the scope {scope!r} (or admin) this route needs"
        super().__init__(403, ErrorCode.INSUFFICIENT_SCOPE, message)


class TooMany(ApiError):
    """Over a per-client limit; `wait` seconds until it may try again."""

    def __init__(self, code: ErrorCode, message: str, wait: float) -> None:
        super().__init__(429, code, message, {"Retry-After": str(max(1, math.ceil(wait)))})


class InvalidNumber(ApiError):
    def __init__(self, code: ErrorCode, name: str, low: int, high: int | None = None) -> None:
        bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
        super().__init__(400, code, f"{name} must be a whole number {bounds}")


class DeadLetterNotFound(ApiError):
    def __init__(self, letter_id: int) -> None:
        super().__init__(404, ErrorCode.DEAD_LETTER_NOT_FOUND, f"no dead letter {letter_id}")


class UnusablePayload(ApiError):
    def __init__(self, problem: str) -> None:
        super().__init__(400, ErrorCode.UNUSABLE_PAYLOAD, problem)


class WebhooksDisabled(ApiError):
    def __init__(self) -> None:
        super().__init__(
            403, ErrorCode.WEBHOOKS_DISABLED, "set JIRA_WEBHOOK_SECRET to accept webhooks"
        )


class IssueNotFound(ApiError):
    def __init__(self, key: str) -> None:
        super().__init__(
            404, ErrorCode.ISSUE_NOT_FOUND, f"Jira has no issue {key}, or hides it from us"
        )


class JiraNotConfigured(ApiError):
    def __init__(self) -> None:
        super().__init__(503, ErrorCode.JIRA_NOT_CONFIGURED, "set JIRA_BASE_URL to read from Jira")


class BodyTooLarge(ApiError):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(
            413, ErrorCode.BODY_TOO_LARGE, f"{what} is over the limit of {limit} bytes"
        )


class BodyTimeout(ApiError):
    """A body that did not arrive in time; the connection closes, since its rest may follow."""

    def __init__(self, seconds: float) -> None:
        message = f"the request body did not arrive within BODY_TIMEOUT ({seconds:g} s)"
        super().__init__(408, ErrorCode.BODY_TIMEOUT, message, {"Connection": "close"})


def error_response(
    status: int, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = shapes.error_json(code, message)
    return Response(body, status, dict(headers or {}), media_type="application/json")


def render_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def on_api_error(request: Request, exc: ApiError) -> Response:
    return render_error(exc)


async def on_http_error(request: Request, exc: HTTPException) -> Response:
    code = _CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
    message = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    return error_response(exc.status_code, code, message, exc.headers)


async def on_invalid_input(request: Request, exc: Exception) -> Response:
    invalid_key = isinstance(exc, InvalidKeyError)
    code = ErrorCode.INVALID_KEY if invalid_key else ErrorCode.INVALID_PROJECT_ID
    return error_response(400, code, str(exc))


async def on_database_down(request: Request, exc: DatabaseUnavailableError) -> Response:
    log.warning("database unreachable", extra={"error": type(exc.__cause__).__name__})
    return error_response(
        503,
        ErrorCode.DATABASE_UNAVAILABLE,
        "PostgreSQL is unreachable; retry later",
        {"Retry-After": DATABASE_RETRY_AFTER},
    )


async def on_jira_error(request: Request, exc: JiraError) -> Response:
    """Jira's trouble is a 503 (retry later) or a 502 (ours to fix), never a 500."""
    log.warning("Jira call failed", extra={"error": str(exc)})
    if isinstance(exc, JiraUnavailableError | JiraRateLimitedError):
        wait = exc.retry_after or JIRA_RETRY_AFTER
        headers = {"Retry-After": str(max(1, round(wait)))}
        return error_response(503, ErrorCode.JIRA_UNAVAILABLE, str(exc), headers)
    if isinstance(exc, JiraAuthError):
        return error_response(502, ErrorCode.JIRA_AUTH_FAILED, str(exc))
    return error_response(502, ErrorCode.JIRA_ERROR, str(exc))


async def on_body_timeout(request: Request, exc: BodyTimeout) -> Response:
    log.info("request body too slow", extra={"path": request.url.path})
    services(request).metrics.abandoned.labels("body_timeout").inc()
    return render_error(exc)


async def on_client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """The client went away before its request was read: nobody to answer, nothing wrong."""
    log.info("client went away mid-request", extra={"path": request.url.path})
    services(request).metrics.abandoned.labels("client_gone").inc()
    # 499, as nginx logs it: the access log and the latency metric count it apart from 5xx.
    return Response(status_code=CLIENT_GONE)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500, ErrorCode.INTERNAL_ERROR, "an unexpected error occurred")


Handler = Callable[[Request, Any], Awaitable[Response]]
HANDLERS: dict[Any, Handler] = {
    ApiError: on_api_error,
    BodyTimeout: on_body_timeout,
    ClientDisconnect: on_client_gone,
    HTTPException: on_http_error,
    InvalidKeyError: on_invalid_input,
    InvalidProjectIdError: on_invalid_input,
    DatabaseUnavailableError: on_database_down,
    JiraError: on_jira_error,
    Exception: on_unexpected,
}
