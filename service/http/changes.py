"""HTTP routes of the change log: a page after a cursor, and a live Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.http.errors import ApiError
from service.http.issues import parse_keys
from service.http.middleware import open_stream
from service.http.services import services
from service.metrics import Metrics
from service.model import check_project_id
from service.shapes import render_change
from service.storage import changes
from service.storage.changes import Cursor, CursorExpiredError, Filter, InvalidCursorError
from service.storage.pool import DatabaseUnavailableError
from service.sync.feed import Feed, follow

log = logging.getLogger(__name__)
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
PING_SECONDS = 15  # a comment line that keeps proxies from closing an idle stream
SHUTDOWN_GRACE_SECONDS = 2  # for a stream to end by itself before it is cancelled
RETRY_MS = 2000  # how long a client's EventSource waits before it reconnects


def parse_filter(request: Request) -> Filter:
    settings: Settings = services(request).settings
    project_id = request.query_params.get("project_id")
    keys = request.query_params.get("keys")
    return Filter(
        project_id=None if project_id is None else check_project_id(project_id),
        keys=None if keys is None else parse_keys(keys, settings.max_batch_keys),
    )


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not re.fullmatch("[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


async def start_cursor(request: Request, after: str | None) -> Cursor:
    """The cursor to read after: the one given, else the log's start or now (`from=`)."""
    start = request.query_params.get("from", "now")
    if start not in ("now", "beginning"):
        raise ApiError(400, "invalid_from", "from must be now or beginning")
    if after is not None:
        return _decode(after)
    if start == "beginning":
        return await changes.first_cursor(services(request).pool)
    return await changes.current_cursor(services(request).pool)


async def get_changes(request: Request) -> Response:
    only = parse_filter(request)
    limit = parse_limit(request.query_params.get("limit"))
    after = await start_cursor(request, request.query_params.get("after"))
    page = await _read(request, after, only, limit)
    settings: Settings = services(request).settings
    now = datetime.now(UTC)
    return JSONResponse(
        {
            "changes": [render_change(change, settings.cache_ttl, now) for change in page.changes],
            "next": page.next.encode(),
        }
    )


async def stream_changes(request: Request) -> Response:
    only = parse_filter(request)
    # A reconnecting EventSource sends the id of the last event it received.
    resumed = request.headers.get("last-event-id") or request.query_params.get("after")
    after = await start_cursor(request, resumed)
    await _read(request, after, only, 1)  # a bad or expired cursor answers before the stream
    closed = open_stream(request)  # the client's own limit: 429 beyond it
    shutdown = anyio.Event()
    return EventSourceResponse(
        _events(request, after, only, shutdown, closed),
        ping=PING_SECONDS,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )


async def _events(
    request: Request, after: Cursor, only: Filter, shutdown: anyio.Event, closed: Callable[[], None]
) -> AsyncIterator[ServerSentEvent]:
    feed: Feed = services(request).feed
    metrics: Metrics = services(request).metrics
    ttl = services(request).settings.cache_ttl
    stop = asyncio.Event()
    watcher = asyncio.create_task(_stop_on(shutdown, stop))
    metrics.change_streams.inc()
    try:
        yield ServerSentEvent(comment="following changes", retry=RETRY_MS)
        async for change in follow(feed, after, only, stop):
            body = json.dumps(render_change(change, ttl, datetime.now(UTC)))
            yield ServerSentEvent(data=body, id=change.cursor.encode(), event="change")
            metrics.change_events.inc()
    except DatabaseUnavailableError as exc:
        # The client reconnects with Last-Event-ID after RETRY_MS and loses nothing.
        log.warning(
            "change stream ended: database unreachable", extra={"error": type(exc).__name__}
        )
    finally:
        watcher.cancel()
        metrics.change_streams.dec()
        closed()


async def _stop_on(shutdown: anyio.Event, stop: asyncio.Event) -> None:
    await shutdown.wait()
    stop.set()


async def _read(request: Request, after: Cursor, only: Filter, limit: int) -> changes.Page:
    try:
        return await changes.read_changes(services(request).pool, after, only, limit)
    except InvalidCursorError as exc:
        raise ApiError(400, "invalid_cursor", str(exc)) from None
    except CursorExpiredError as exc:
        raise ApiError(410, "cursor_expired", str(exc)) from None


def _decode(text: str) -> Cursor:
    try:
        return Cursor.decode(text)
    except InvalidCursorError as exc:
        raise ApiError(400, "invalid_cursor", str(exc)) from None


routes = [
    Route("/changes", get_changes, methods=["GET"]),
    Route("/changes/stream", stream_changes, methods=["GET"]),
]
