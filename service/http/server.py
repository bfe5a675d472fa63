"""uvicorn as we run it: deadlines for a request's head, bounded heads, JSON for its own errors.

uvicorn waits as long as a client likes for a request's line and headers (its keep-alive
timeout only runs between requests), and answers what it cannot parse with plain text. Our
protocol closes a connection whose head has not arrived within HEADER_TIMEOUT, refuses a
URL over MAX_URL bytes (414) or a head over MAX_HEAD bytes (431), and answers these and
every unparsable request with the API's JSON error. The body's deadline is the app's
(http.middleware.BodyLimit), where the answer can be a 408.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service import shapes
from service.config import Settings

log = logging.getLogger(__name__)
MAX_URL = 16 * 1024  # bytes of a request target; browsers and proxies stop near 8 to 16 KiB
MAX_HEAD = 64 * 1024  # bytes of a request's headers together
KEEP_ALIVE_SECONDS = 5  # an idle connection between two requests
# An ASGI extension ours offers the app: {"abort": callable} closes the connection at once.
ABORT = "jsc.abort"


class Config(uvicorn.Config):
    """uvicorn's Config, carrying HEADER_TIMEOUT to every worker process's protocols."""

    def __init__(self, app: Any, *, header_timeout: float, **options: Any) -> None:
        super().__init__(app, http=Protocol, timeout_keep_alive=KEEP_ALIVE_SECONDS, **options)
        self.header_timeout = header_timeout


class HeadTooLargeError(ValueError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size bound on each request's head."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout: float = getattr(config, "header_timeout", 10.0)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refusal: HeadTooLargeError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm()  # the next request on a kept-alive connection has its own deadline

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL:
            self._refuse(414, "uri_too_long", f"the URL is over {MAX_URL} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD:
            self._refuse(431, "headers_too_large", f"the headers are over {MAX_HEAD} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            # A weak reference: the scope is the cycle's, and a strong one would make each
            # request a reference cycle that only the garbage collector frees.
            abort = functools.partial(_abort, weakref.ref(cycle))
            self.scope.setdefault("extensions", {})[ABORT] = {"abort": abort}

    def send_400_response(self, msg: str) -> None:
        refusal = self._refusal or HeadTooLargeError(400, "bad_request", "not a valid HTTP request")
        body = shapes.error_json(refusal.code, str(refusal))
        head = (
            f"HTTP/1.1 {refusal.status} {_REASONS[refusal.status]}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

    def _refuse(self, status: int, code: str, message: str) -> None:
        # Raised inside a parser callback: httptools turns it into the parser error that
        # uvicorn answers with send_400_response.
        self._refusal = HeadTooLargeError(status, code, message)
        raise self._refusal

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        log.info("connection closed: no request head within HEADER_TIMEOUT")
        self.transport.close()


def _abort(cycle: weakref.ref[Any]) -> None:
    """End a response that can send nothing more (its client reads nothing): close the
    connection, as a client that went away, so that uvicorn does not call it an error."""
    found = cycle()
    if found is not None:
        found.disconnected = True
        found.transport.close()


_REASONS = {400: "Bad Request", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


def config(app: Any, settings: Settings, **options: Any) -> Config:
    return Config(app, header_timeout=settings.header_timeout, **options)
