"""ASGI middleware: the guards of the routes they wrap (a client's scope, or a token), and a
cap on body size."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Iterable

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.clients import Client, TooManyStreamsError
from service.http.errors import (
    ApiError,
    BodyTimeout,
    BodyTooLarge,
    ErrorCode,
    InsufficientScope,
    TooMany,
    Unauthorized,
    render_error,
)
from service.http.services import KEY, services

STREAM_RETRY_SECONDS = 30.0  # a stream over the limit: try again once another may have closed
CALLER = "jsc.caller"  # the scope entry naming the client a ScopeGuard let in


def token_matches(presented: str, accepted: Iterable[str]) -> bool:
    """Compare against every accepted token in constant time, whatever matches first."""
    found = False
    for token in accepted:
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class Guard:
    """Require one of `tokens` as a bearer token on the route it wraps (METRICS_TOKEN on
    /metrics); with no tokens configured the route is open."""

    def __init__(self, app: ASGIApp, tokens: frozenset[str], accepted: str) -> None:
        self.app = app
        self.tokens = tokens
        self.accepted = accepted
        self.required = bool(tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.required:
            return await self.app(scope, receive, send)
        token = bearer_token(scope)
        if token is None or not token_matches(token, self.tokens):
            problem = "missing bearer token" if token is None else "this token does not open it"
            response = render_error(Unauthorized(problem, self.accepted))
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


class ScopeGuard:
    """Let in a client holding `scope` (or admin), within its request rate; or a request
    bearing one of `tokens` (CRON_SECRET on the cron route). The client is kept in the
    request's scope for the handler (`caller`)."""

    def __init__(
        self, app: ASGIApp, scope: str, accepted: str, tokens: frozenset[str] = frozenset()
    ) -> None:
        self.app, self.scope, self.accepted, self.tokens = app, scope, accepted, tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        clients = scope["state"][KEY].clients
        token = bearer_token(scope)
        client = clients.identify(token)
        if client is None and token is not None and token_matches(token, self.tokens):
            return await self.app(scope, receive, send)
        refusal = self._refusal(client, token, clients.admit)
        if refusal is not None:
            return await render_error(refusal)(scope, receive, send)
        scope[CALLER] = client
        await self.app(scope, receive, send)

    def _refusal(
        self, client: Client | None, token: str | None, admit: Callable[[Client], float]
    ) -> ApiError | None:
        if client is None:
            problem = "missing bearer token" if token is None else "this token does not open it"
            return Unauthorized(problem, self.accepted)
        if not client.allows(self.scope):
            return InsufficientScope(client.name, self.scope)
        wait = admit(client)
        if wait > 0:
            message = f"client {client.name!r} is over its request rate (CLIENT_RATE)"
            return TooMany(ErrorCode.RATE_LIMITED, message, wait)
        return None


def caller(connection: HTTPConnection) -> Client | None:
    """The client a ScopeGuard let in; None for a bare token (CRON_SECRET)."""
    found: Client | None = connection.scope.get(CALLER)
    return found


def open_stream(connection: HTTPConnection) -> Callable[[], None]:
    """Count a change stream of the caller against its limit (429 beyond it); answers the
    call that counts it closed. The process's own bound on streams is the feed's."""
    try:
        return services(connection).clients.open_stream(caller(connection))
    except TooManyStreamsError as exc:
        raise TooMany(ErrorCode.TOO_MANY_STREAMS, str(exc), STREAM_RETRY_SECONDS) from None


class BodyLimit:
    """Answer 413 for a body over the limit, declared up front or streamed, and 408 for one
    that has not arrived within `timeout` seconds of the request's head."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            response = render_error(self._too_large())
            return await response(scope, receive, send)
        unread = [_has_body(scope, declared)]  # whether the body may still be on its way
        await self.app(scope, self._counting(receive, unread), _closing(send, unread))

    def _counting(self, receive: Receive, unread: list[bool]) -> Receive:
        seen = 0
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def counted() -> Message:
            nonlocal seen
            if not unread[0]:  # the body is in: what comes now is a disconnect, whenever
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.timeout) from None
            seen += len(message.get("body", b""))
            unread[0] = message["type"] == "http.request" and message.get("more_body", False)
            if seen > self.limit:
                raise self._too_large()
            return message

        return counted

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge("request body", self.limit)


def _closing(send: Send, unread: list[bool]) -> Send:
    """Close the connection after an answer given before the request's body was read (a 401
    to a slow upload, say): kept alive, it would wait on the rest of that body for ever."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and unread[0]:
            headers = list(message.get("headers", []))
            if all(name.lower() != b"connection" for name, _ in headers):
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return sending


def _has_body(scope: Scope, declared: int | None) -> bool:
    if declared is not None:
        return declared > 0
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", []))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
