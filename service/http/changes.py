"""HTTP routes of the change log: a page after a cursor, and a live Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.config import Settings
from service.http.errors import ApiError, ErrorCode
from service.http.issues import parse_keys
from service.http.middleware import open_stream
from service.http.params import whole_param
from service.http.responses import ShapedResponse
from service.http.server import ABORT
from service.http.services import services
from service.model import check_project_id
from service.shapes.changes import ChangePage, shape_change
from service.storage import changes
from service.storage.changes import (
    Change,
    Cursor,
    CursorExpiredError,
    Filter,
    InvalidCursorError,
)
from service.storage.pool import DatabaseUnavailableError
from service.sync.hub import StreamDroppedError, StreamLimitError

log = logging.getLogger(__name__)
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
PING_SECONDS = 15  # a comment line that keeps proxies from closing an idle stream
SHUTDOWN_GRACE_SECONDS = 2  # for a stream to end by itself before it is cancelled
RETRY_MS = 2000  # how long a client's EventSource waits before it reconnects
STREAM_RETRY_SECONDS = 5  # Retry-After of a stream refused at STREAM_LIMIT
STALLED_SECONDS = 30  # a send blocked this long (the client reads nothing) ends the stream


def parse_filter(request: Request) -> Filter:
    settings: Settings = services(request).settings
    project_id = request.query_params.get("project_id")
    keys = request.query_params.get("keys")
    return Filter(
        project_id=None if project_id is None else check_project_id(project_id),
        keys=None if keys is None else parse_keys(keys, settings.max_batch_keys),
    )


async def start_cursor(request: Request, after: str | None) -> Cursor:
    """The cursor to read after: the one given, else the log's start or now (`from=`)."""
    start = request.query_params.get("from", "now")
    if start not in ("now", "beginning"):
        raise ApiError(400, ErrorCode.INVALID_FROM, "from must be now or beginning")
    if after is not None:
        return _decode(after)
    if start == "beginning":
        return await changes.first_cursor(services(request).pool)
    return await changes.current_cursor(services(request).pool)


async def get_changes(request: Request) -> Response:
    only = parse_filter(request)
    query = request.query_params
    limit = whole_param(query, "limit", ErrorCode.INVALID_LIMIT, DEFAULT_LIMIT, MAX_LIMIT)
    after = await start_cursor(request, request.query_params.get("after"))
    page = await _read(request, after, only, limit)
    settings: Settings = services(request).settings
    now = datetime.now(UTC)
    shaped = [shape_change(change, settings.cache_ttl, now) for change in page.changes]
    return ShapedResponse(ChangePage(shaped, page.next.encode()))


async def stream_changes(request: Request) -> Response:
    only = parse_filter(request)
    # A reconnecting EventSource sends the id of the last event it received.
    resumed = request.headers.get("last-event-id") or request.query_params.get("after")
    after = await start_cursor(request, resumed)
    await _read(request, after, only, 1)  # a bad or expired cursor answers before the stream
    closed = open_stream(request)  # the client's own limit (CLIENT_MAX_STREAMS): 429 beyond it
    hub = services(request).hub
    try:
        release = hub.claim()  # the process's own (STREAM_LIMIT): 503 beyond it
    except StreamLimitError as exc:
        closed()
        services(request).metrics.streams_refused.inc()
        raise ApiError(
            503, ErrorCode.TOO_MANY_STREAMS, str(exc), {"Retry-After": str(STREAM_RETRY_SECONDS)}
        ) from None
    shutdown = anyio.Event()
    return Stream(
        _events(request, after, only, shutdown),
        released(release, closed),
        ping=PING_SECONDS,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        send_timeout=STALLED_SECONDS,
    )


class Stream(EventSourceResponse):
    """An SSE answer that holds a STREAM_LIMIT slot until it ends, however it ends."""

    def __init__(
        self, events: AsyncIterator[ServerSentEvent | bytes], release: Callable[[], None], **kw: Any
    ) -> None:
        super().__init__(events, **kw)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # Its client stopped reading altogether: nothing more can reach it.
            log.info("change stream ended: the client stopped reading")
            aborting = scope.get("extensions", {}).get(ABORT)
            if aborting is not None:
                aborting["abort"]()
        finally:
            self.release()


def released(*releases: Callable[[], None]) -> Callable[[], None]:
    """One call that releases every slot a stream holds (the client's, the process's)."""

    def release() -> None:
        for each in releases:
            each()

    return release


def render_frame(change: Change, ttl: float) -> bytes:
    """One entry as its SSE event, rendered once for every stream that sends it."""
    body = msgspec.json.encode(shape_change(change, ttl, datetime.now(UTC))).decode()
    return ServerSentEvent(data=body, id=change.cursor.encode(), event="change").encode()


def dropped_frame(exc: StreamDroppedError) -> bytes:
    """The event that tells a client that fell behind where to resume (its `id`)."""
    error = {"code": "stream_dropped", "message": str(exc), "resume_after": exc.last.encode()}
    body = msgspec.json.encode(error).decode()
    return ServerSentEvent(data=body, id=exc.last.encode(), event="dropped").encode()


async def _events(
    request: Request, after: Cursor, only: Filter, shutdown: anyio.Event
) -> AsyncIterator[ServerSentEvent | bytes]:
    hub = services(request).hub
    metrics = services(request).metrics
    stop = asyncio.Event()
    watcher = asyncio.create_task(_stop_on(shutdown, stop))
    metrics.change_streams.inc()
    try:
        yield ServerSentEvent(comment="following changes", retry=RETRY_MS)
        # Closed here, not by the garbage collector, so that its waits end with the stream.
        async with contextlib.aclosing(hub.frames(after, only, stop)) as batches:
            async for frames in batches:
                yield b"".join(frames)
                metrics.change_events.inc(len(frames))
    except StreamDroppedError as exc:
        log.info("change stream dropped: its client fell behind")
        yield dropped_frame(exc)
    except DatabaseUnavailableError as exc:
        # The client reconnects with Last-Event-ID after RETRY_MS and loses nothing.
        log.warning(
            "change stream ended: database unreachable", extra={"error": type(exc).__name__}
        )
    finally:
        watcher.cancel()
        metrics.change_streams.dec()


async def _stop_on(shutdown: anyio.Event, stop: asyncio.Event) -> None:
    await shutdown.wait()
    stop.set()


async def _read(request: Request, after: Cursor, only: Filter, limit: int) -> changes.Page:
    try:
        return await changes.read_changes(services(request).pool, after, only, limit)
    except InvalidCursorError as exc:
        raise ApiError(400, ErrorCode.INVALID_CURSOR, str(exc)) from None
    except CursorExpiredError as exc:
        raise ApiError(410, ErrorCode.CURSOR_EXPIRED, str(exc)) from None


def _decode(text: str) -> Cursor:
    try:
        return Cursor.decode(text)
    except InvalidCursorError as exc:
        raise ApiError(400, ErrorCode.INVALID_CURSOR, str(exc)) from None


routes = [
    Route("/changes", get_changes, methods=["GET"]),
    Route("/changes/stream", stream_changes, methods=["GET"]),
]
