"""ASGI middleware around every request: a request id, its latency metric and one log line."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id, write_json
from service.metrics import Metrics

log = logging.getLogger("service.access")
HEADER = b"x-request-id"
# A caller's id is kept only if it is short and plain, so that it is safe to log and echo.
_GOOD_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class Access:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._ids = RequestIds()
        # prometheus_client looks a label set up under a lock on each labels(): once per set.
        self._observers: dict[tuple[str, str, int], Callable[[float], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = _incoming_id(scope) or self._ids.next()
        token = request_id.set(rid)
        started, status = time.perf_counter(), 500
        header = (HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            request_id.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route(scope)
        labels = (scope["method"], route, status)
        observe = self._observers.get(labels)
        if observe is None:
            child = self.metrics.http_seconds.labels(scope["method"], route, str(status))
            observe = self._observers[labels] = child.observe
        observe(seconds)
        if not log.isEnabledFor(logging.INFO):
            return
        # The path only: a query string may carry a webhook secret.
        fields = {
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        if not write_json(log, "request", fields):
            log.info("request", extra=fields)


class RequestIds:
    """Unique ids without a system call each: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._count = itertools.count(1)

    def next(self) -> str:
        """16 hex digits, unique in this process for its first 4 billion requests."""
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFF:08x}"


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == HEADER and _GOOD_ID.match(value):
            return bytes(value).decode()
    return None


def _route(scope: Scope) -> str:
    # Starlette records the matched route; its template keeps the label set small.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return f"{scope.get('root_path', '')}{path}" if path else "unmatched"
