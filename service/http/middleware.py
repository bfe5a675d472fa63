"""ASGI middleware: a bearer-token guard for the routes it wraps, and a cap on body size."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import BodyTimeout, BodyTooLarge, Unauthorized, render_error


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
    """Require one of `tokens` as a bearer token on the route it wraps.

    With `required` false and no tokens configured the route is open (a loopback service
    without tokens); with `required` true and no tokens, nothing opens it.
    """

    def __init__(
        self, app: ASGIApp, tokens: frozenset[str], accepted: str, required: bool = False
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.accepted = accepted
        self.required = required or bool(tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.required:
            return await self.app(scope, receive, send)
        token = bearer_token(scope)
        if token is None or not token_matches(token, self.tokens):
            problem = "missing bearer token" if token is None else "this token does not open it"
            response = render_error(Unauthorized(problem, self.accepted))
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


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
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen, more = 0, True
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def counted() -> Message:
            nonlocal seen, more
            if not more:  # the body is in: what comes now is a disconnect, whenever it comes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.timeout) from None
            seen += len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)
            if seen > self.limit:
                raise self._too_large()
            return message

        return counted

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge("request body", self.limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
