"""The change log's hub, waking every reader that waits for entries.

Any number of streams and subscription deliveries follow the process's one LISTEN connection
(service/sync/listener.py). A notification comes when a writer commits, but its entries are
readable only once every older transaction has ended too (service/storage/changes.py), and
nothing announces that: after a notification the feed checks the horizon, and again with a
growing delay while it has not passed the announced entries, then wakes the readers once.
It never polls the table otherwise, except once a second while the listener is down, and
once whenever it (re)connects, since what was committed while nobody listened was never
announced. While no reader waits, a notification is only remembered: the next reader to
wait has the horizon checked then (webhook ingest with nothing following the log paid a
query per group for nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from service.storage import changes
from service.storage.changes import Change, Cursor, Filter
from service.sync import listener
from service.sync.listener import Listener, Subscriber

log = logging.getLogger(__name__)
CHANNEL = "jsc_changes"  # see migrations/008_changes.sql
FALLBACK_SECONDS = 1.0  # how often readers look while the listener is down
SETTLE_FIRST, SETTLE_CAP = 0.001, 0.05  # seconds between horizon checks, doubling
# Notifications within this many seconds of a wake share the next one: every wake costs a
# read per waiting reader, and a busy log notifies hundreds of times a second.
WAKE_GAP = 0.01
PAGE = 500
LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Feed:
    """Wakes waiting readers when new entries of the change log become readable."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.live = False
        self.closing = asyncio.Event()
        self.notifications = self.wakes = 0
        self._wake = asyncio.Event()
        self._pending = False
        self._waiting = 0
        self._settling: asyncio.Task[None] | None = None

    def waiter(self) -> asyncio.Event:
        """The event the next wake sets: take it before reading, then wait on it."""
        return self._wake

    def wake(self) -> None:
        self.wakes += 1
        self._wake.set()
        self._wake = asyncio.Event()

    async def wait(self, waiter: asyncio.Event, stop: asyncio.Event) -> None:
        """Until woken, stopped or closing; while the listener is down, a second at most."""
        if self._pending:
            self._settle_soon()  # announced while this reader read, when nobody waited
        self._waiting += 1
        try:
            await self._first(waiter, stop)
        finally:
            self._waiting -= 1

    async def idle(self, stop: asyncio.Event) -> None:
        """Like wait, for a reader with nothing to read: no announcement is checked for it."""
        await self._first(asyncio.Event(), stop)

    async def _first(self, *events: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(event.wait()) for event in (*events, self.closing)]
        timeout = None if self.live else FALLBACK_SECONDS
        try:
            await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            for task in waits:
                task.cancel()

    def subscriber(self) -> Subscriber:
        return Subscriber(CHANNEL, lambda _: self.on_notify(), self.on_up, self.on_down)

    def on_up(self) -> None:
        self.live = True
        self.on_notify()  # entries written while nobody listened

    def on_down(self) -> None:
        self.live = False
        self.wake()  # readers look by themselves, each second, until it is back

    def on_notify(self) -> None:
        self.notifications += 1
        self._pending = True
        if self._waiting:
            self._settle_soon()

    def _settle_soon(self) -> None:
        if self._settling is None or self._settling.done():
            self._settling = asyncio.create_task(self._settle())

    async def _settle(self) -> None:
        """Wake the readers once the entries announced so far are readable."""
        while self._pending and not self.closing.is_set():
            self._pending = False
            # On trouble, wake anyway: the readers meet it too, and deal with it.
            with contextlib.suppress(*LOST):
                await self._until_readable()
            self.wake()
            await set_within(self.closing, WAKE_GAP)

    async def _until_readable(self) -> None:
        row = await self.pool.fetchrow(_NEWEST)
        newest, horizon = (row["newest"], row["horizon"]) if row else (None, 0)
        delay = SETTLE_FIRST
        while newest is not None and newest >= horizon:
            if await set_within(self.closing, delay):
                return
            delay = min(delay * 2, SETTLE_CAP)
            horizon = await self.pool.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())")

    async def close(self) -> None:
        self.closing.set()
        self.wake()
        if self._settling is not None:
            self._settling.cancel()
            await asyncio.gather(self._settling, return_exceptions=True)


_NEWEST = """
SELECT (SELECT max(txid) FROM changes) AS newest,
       pg_snapshot_xmin(pg_current_snapshot()) AS horizon
"""


async def set_within(event: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


@contextlib.asynccontextmanager
async def running(pool: asyncpg.Pool, listener: Listener) -> AsyncIterator[Feed]:
    """The feed, following the listener (started after this), for the lifespan; closing it
    ends every reader's wait."""
    feed = Feed(pool)
    listener.subscribe(feed.subscriber())
    try:
        yield feed
    finally:
        await feed.close()


async def follow(
    feed: Feed, after: Cursor, only: Filter, stop: asyncio.Event
) -> AsyncIterator[Change]:
    """Every entry after `after` as it becomes readable, until `stop` or the feed closes.

    The reading loop of every follower (streams, and whatever else tails the log): it reads
    what is readable, then waits for the feed's next wake, never polling in between.
    """
    while not (stop.is_set() or feed.closing.is_set()):
        waiter = feed.waiter()  # taken before the read, so that no wake is missed
        page = await changes.read_changes(feed.pool, after, only, PAGE)
        for change in page.changes:
            yield change
        after = page.next
        if not page.full:
            await feed.wait(waiter, stop)


@contextlib.asynccontextmanager
async def following(pool: asyncpg.Pool, dsn: str) -> AsyncIterator[Feed]:
    """A feed with a listener of its own on `dsn`, for a process that follows nothing else."""
    heard = Listener(dsn)
    async with running(pool, heard) as feed, listener.running(heard):
        yield feed
