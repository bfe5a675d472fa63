"""ASGI middleware at the door: bearer tokens for the API and a cap on body size."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import ApiError, error_response

API_PREFIX = "/api/v1"


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


class TokenGuard:
    """Require one of API_TOKENS on /api/v1, except on paths that check their own secret."""

    def __init__(self, app: ASGIApp, tokens: frozenset[str], open_paths: frozenset[str]) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guarded(scope["path"]):
            return await self.app(scope, receive, send)
        token = bearer_token(scope)
        if token is None or not token_matches(token, self.tokens):
            problem = "missing bearer token" if token is None else "unknown bearer token"
            response = error_response(
                401, "unauthorized", problem, {"WWW-Authenticate": 'Bearer realm="api"'}
            )
            return await response(scope, receive, send)
        await self.app(scope, receive, send)

    def _guarded(self, path: str) -> bool:
        return bool(self.tokens) and path.startswith(API_PREFIX) and path not in self.open_paths


class BodyLimit:
    """Answer 413 for a body over the limit, declared up front or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            response = error_response(413, "body_too_large", self._message())
            return await response(scope, receive, send)
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, "body_too_large", self._message())
            return message

        return counted

    def _message(self) -> str:
        return f"request body is over the limit of {self.limit} bytes"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
