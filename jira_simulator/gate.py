"""What stands before every REST handler: latency, faults, the rate limit, credentials, the log."""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from .faults import Failure
from .limits import Refusal
from .options import SimOptions
from .traffic import RequestRecord, endpoint_of

if TYPE_CHECKING:
    from .server import Simulator

SIM: web.AppKey[Simulator] = web.AppKey("simulator")
ANONYMOUS = web.RequestKey("anonymous", bool)
UNAUTHENTICATED = "Client must be authenticated to access this resource."
Caller = Literal["user", "anonymous", "refused"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def jira_errors(status: int, *messages: str, headers: dict[str, str] | None = None) -> web.Response:
    """Jira's error body: {"errorMessages": [...], "errors": {}}."""
    body = {"errorMessages": list(messages), "errors": {}}
    return web.json_response(body, status=status, headers=headers)


def seconds_text(seconds: float) -> str:
    """Whole seconds as Jira sends them; a fraction only when a test asked for one."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_sim"):
        return await handler(request)
    sim, arrived = request.app[SIM], time.monotonic()
    try:
        response = await _answer(sim, request, handler)
    except asyncio.CancelledError:
        # The client gave up (a hang fault, say); log it as nginx would, 499.
        sim.traffic.record(_entry(request, arrived, 499, None))
        raise
    retry_after = response.headers.get("Retry-After")
    wait = float(retry_after) if retry_after else None
    sim.traffic.record(_entry(request, arrived, response.status, wait))
    return response


def _entry(request: web.Request, arrived: float, status: int, wait: float | None) -> RequestRecord:
    return RequestRecord(
        arrived=arrived,
        answered=time.monotonic(),
        method=request.method,
        path=request.path,
        endpoint=endpoint_of(request.path),
        status=status,
        limited=status == 429,
        retry_after=wait,
    )


async def _answer(sim: Simulator, request: web.Request, handler: Handler) -> web.StreamResponse:
    options, endpoint = sim.options, endpoint_of(request.path)
    await asyncio.sleep(options.latency + sim.faults.take_hang(endpoint))
    failure = sim.faults.take_failure(endpoint)
    if failure is not None:
        return _failed(failure)
    refusal = sim.limiter.check(options.rate_limit, options.burst, options.retry_after)
    if refusal is not None:
        return _too_many(refusal, options.omit_retry_after)
    caller = identify(options, request.headers.get("Authorization"))
    if caller == "refused":
        return unauthorized()
    request[ANONYMOUS] = caller == "anonymous"
    response = await _handle(request, handler)
    if options.rate_limit > 0:
        response.headers["X-RateLimit-Limit"] = str(options.burst)
        response.headers["X-RateLimit-Remaining"] = str(sim.limiter.remaining())
    return response


async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as error:
        # The router's own 404 and 405, in Jira's error shape.
        return jira_errors(error.status, error.reason)


def identify(options: SimOptions, header: str | None) -> Caller:
    """Who is calling; with no credentials configured everyone is a user."""
    if not options.checks_credentials:
        return "user"
    if not header:
        # Jira serves a request without credentials as the anonymous user, not with 401.
        return "anonymous"
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and options.email and options.token:
        expected = base64.b64encode(f"{options.email}:{options.token}".encode()).decode()
        return "user" if _same(value.strip(), expected) else "refused"
    if scheme.lower() == "bearer" and options.pat:
        return "user" if _same(value.strip(), options.pat) else "refused"
    return "refused"


def unauthorized() -> web.Response:
    headers = {"X-Seraph-LoginReason": "AUTHENTICATED_FAILED", "WWW-Authenticate": "Basic"}
    return web.Response(status=401, text=UNAUTHENTICATED, headers=headers)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _failed(failure: Failure) -> web.Response:
    headers = None
    if failure.retry_after is not None:
        headers = {"Retry-After": seconds_text(failure.retry_after)}
    return jira_errors(failure.status, "Injected failure from the Jira simulator.", headers=headers)


def _too_many(refusal: Refusal, omit_retry_after: bool) -> web.Response:
    # Jira documents the reset as an ISO time to the minute: yyyy-MM-ddTHH:mmZ.
    reset = datetime.now(UTC) + timedelta(seconds=refusal.retry_after)
    headers = {
        "X-RateLimit-Limit": str(refusal.limit),
        "X-RateLimit-Remaining": str(refusal.remaining),
        "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ"),
        "RateLimit-Reason": "jira-burst-based",
    }
    if not omit_retry_after:
        headers["Retry-After"] = seconds_text(refusal.retry_after)
    return jira_errors(429, "Rate limit exceeded.", headers=headers)
