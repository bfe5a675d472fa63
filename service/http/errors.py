"""API errors: every failure answers JSON {"error": {"code", "message"}} with its status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
JIRA_RETRY_AFTER = 30.0
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    503: "unavailable",
}


class ApiError(Exception):
    """A failure the caller can act on, with a stable code."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


# Stable codes callers may branch on; each status's codes are listed in the OpenAPI document.
UNAUTHORIZED = "unauthorized"
INVALID_LIMIT = "invalid_limit"
INVALID_CURSOR = "invalid_cursor"
INVALID_ID = "invalid_id"
DEAD_LETTER_NOT_FOUND = "dead_letter_not_found"
UNUSABLE_PAYLOAD = "unusable_payload"
WEBHOOKS_DISABLED = "webhooks_disabled"
BODY_TOO_LARGE = "body_too_large"
DATABASE_UNAVAILABLE = "database_unavailable"
ISSUE_NOT_FOUND = "issue_not_found"
JIRA_NOT_CONFIGURED = "jira_not_configured"


class Unauthorized(ApiError):
    """No token, or one that does not open the route; the answer names the kinds it takes."""

    def __init__(self, problem: str, accepted: str) -> None:
        super().__init__(
            401,
            UNAUTHORIZED,
            f"{problem}; send {accepted}",
            {"WWW-Authenticate": 'Bearer realm="api"'},
        )


class InvalidNumber(ApiError):
    def __init__(self, code: str, name: str, low: int, high: int | None = None) -> None:
        bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
        super().__init__(400, code, f"{name} must be a whole number {bounds}")


class DeadLetterNotFound(ApiError):
    def __init__(self, letter_id: int) -> None:
        super().__init__(404, DEAD_LETTER_NOT_FOUND, f"no dead letter {letter_id}")


class UnusablePayload(ApiError):
    def __init__(self, problem: str) -> None:
        super().__init__(400, UNUSABLE_PAYLOAD, problem)


class WebhooksDisabled(ApiError):
    def __init__(self) -> None:
        super().__init__(403, WEBHOOKS_DISABLED, "set JIRA_WEBHOOK_SECRET to accept webhooks")


class IssueNotFound(ApiError):
    def __init__(self, key: str) -> None:
        super().__init__(404, ISSUE_NOT_FOUND, f"Jira has no issue {key}, or hides it from us")


class JiraNotConfigured(ApiError):
    def __init__(self) -> None:
        super().__init__(503, JIRA_NOT_CONFIGURED, "set JIRA_BASE_URL to read from Jira")


class BodyTooLarge(ApiError):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(413, BODY_TOO_LARGE, f"{what} is over the limit of {limit} bytes")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def render_error(exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def on_api_error(request: Request, exc: ApiError) -> Response:
    return render_error(exc)


async def on_http_error(request: Request, exc: HTTPException) -> Response:
    code = _CODES.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    return error_response(exc.status_code, code, message, exc.headers)


async def on_invalid_input(request: Request, exc: Exception) -> Response:
    code = "invalid_key" if isinstance(exc, InvalidKeyError) else "invalid_project_id"
    return error_response(400, code, str(exc))


async def on_database_down(request: Request, exc: DatabaseUnavailableError) -> Response:
    log.warning("database unreachable", extra={"error": type(exc.__cause__).__name__})
    return error_response(
        503,
        DATABASE_UNAVAILABLE,
        "PostgreSQL is unreachable; retry later",
        {"Retry-After": DATABASE_RETRY_AFTER},
    )


async def on_jira_error(request: Request, exc: JiraError) -> Response:
    """Jira's trouble is a 503 (retry later) or a 502 (ours to fix), never a 500."""
    log.warning("Jira call failed", extra={"error": str(exc)})
    if isinstance(exc, JiraUnavailableError | JiraRateLimitedError):
        wait = exc.retry_after or JIRA_RETRY_AFTER
        headers = {"Retry-After": str(max(1, round(wait)))}
        return error_response(503, "jira_unavailable", str(exc), headers)
    if isinstance(exc, JiraAuthError):
        return error_response(502, "jira_auth_failed", str(exc))
    return error_response(502, "jira_error", str(exc))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500, "internal_error", "an unexpected error occurred")


Handler = Callable[[Request, Any], Awaitable[Response]]
HANDLERS: dict[Any, Handler] = {
    ApiError: on_api_error,
    HTTPException: on_http_error,
    InvalidKeyError: on_invalid_input,
    InvalidProjectIdError: on_invalid_input,
    DatabaseUnavailableError: on_database_down,
    JiraError: on_jira_error,
    Exception: on_unexpected,
}
