"""One reader of the change log for every stream of the process: a page per wake, shared.

A stream first reads what it missed from PostgreSQL itself (its own cursor, filtered in
SQL), then joins the hub. On each wake of the feed the hub reads the log once, every entry
with who it concerns (storage.changes.Reach), renders each entry once, and hands each
stream the entries its filter admits, in memory: the database's work per change does not
grow with the number of streams. Each stream has a bounded buffer; a stream whose client
stops reading fills it, and is dropped: it gets no more entries and ends with an event
telling the client where to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from service.storage import changes
from service.storage.changes import Change, Cursor, Filter, Page
from service.storage.pool import DatabaseUnavailableError
from service.sync.background import task_during
from service.sync.feed import LOST, PAGE, Feed, set_within
from service.sync.taps import Tap, Taps

log = logging.getLogger(__name__)
Render = Callable[[Change], bytes]
RETRY_SECONDS = 0.5  # after a failed read


class StreamLimitError(RuntimeError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"this process already serves its STREAM_LIMIT of {limit} streams")
        self.limit = limit


class StreamDroppedError(RuntimeError):
    """The stream's client read too slowly: it resumes after `last`, the last entry sent."""

    def __init__(self, last: Cursor) -> None:
        super().__init__(f"the client fell behind; resume after {last.encode()}")
        self.last = last


class Hub:
    """Reads the log once per wake and hands each page to every joined stream."""

    def __init__(self, feed: Feed, render: Render, limit: int, buffer: int) -> None:
        self.feed, self.render = feed, render
        self.limit, self.buffer = limit, buffer
        self.taps = Taps()
        self.open = 0  # streams counted against the limit, catching up or joined
        self.reads = self.dropped = 0
        self.position: Cursor | None = None  # where the hub reads next; None with no taps
        self.closed = False
        self._kick = asyncio.Event()

    def claim(self) -> Callable[[], None]:
        """Count one stream against STREAM_LIMIT; answer the call that releases it (once)."""
        if self.open >= self.limit:
            raise StreamLimitError(self.limit)
        self.open += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open -= 1

        return release

    async def frames(
        self, after: Cursor, only: Filter, stop: asyncio.Event
    ) -> AsyncGenerator[list[bytes], None]:
        """A stream's rendered entries after `after`, in batches, until `stop` or closing.

        Raises StreamDroppedError when the stream fell a buffer behind.
        """
        sent = after
        while True:  # catching up on its own, filtered in SQL
            page = await changes.read_changes(self.feed.pool, after, only, PAGE)
            if page.changes:
                yield [self.render(change) for change in page.changes]
                sent = page.changes[-1].cursor
            after = page.next
            if not page.full and self._joinable(after):
                break
        tap = self._join(after, only)
        # One task per stream wakes it on stop; each entry then costs one Event, no task.
        waking = asyncio.create_task(_set_on(stop, tap.ready))
        try:
            while not (stop.is_set() or self.closed):
                await tap.ready.wait()
                taken = tap.take()
                if taken:
                    yield [frame for _, frame in taken]
                    sent = taken[-1][0]
                if tap.dropped:
                    raise StreamDroppedError(sent)
        finally:
            waking.cancel()
            self._leave(tap)

    def close(self) -> None:
        """End every stream's wait: the process is stopping."""
        self.closed = True
        for tap in self.taps.joined:
            tap.ready.set()

    def _joinable(self, after: Cursor) -> bool:
        # A tap gets the hub's pages from its position on: the stream must have read that far.
        return self.position is None or after >= self.position

    def _join(self, after: Cursor, only: Filter) -> Tap:
        tap = Tap(only, after, self.buffer)
        self.taps.add(tap)
        self.position = after if self.position is None else self.position
        self._kick.set()  # entries readable since the last wake are read now, not at the next
        return tap

    def _leave(self, tap: Tap) -> None:
        self.taps.discard(tap)
        if not self.taps:
            self.position = None

    async def run(self) -> None:
        """Until the feed closes: on each wake (or kick), read once and hand out the page."""
        while not (self.feed.closing.is_set() or self.closed):
            waiter = self.feed.waiter()
            self._kick.clear()
            if self.position is not None:
                try:
                    if await self._read_once(self.position):
                        continue  # a full page: more is readable now
                except (*LOST, DatabaseUnavailableError) as exc:
                    # Read again soon: the wake that announced these entries will not recur.
                    log.warning("change hub read failed", extra={"error": type(exc).__name__})
                    await set_within(self.feed.closing, RETRY_SECONDS)
                    continue
            if self.position is None:
                await self.feed.idle(self._kick)  # no stream: a joining one kicks
            else:
                await self.feed.wait(waiter, self._kick)

    async def _read_once(self, position: Cursor) -> bool:
        page = await changes.read_reach(self.feed.pool, position, PAGE)
        self.reads += 1
        if self.position != position:
            return True  # every tap left during the read (and others joined): start again
        self._hand(page)
        self.position = page.next if self.taps else None
        return page.full

    def _hand(self, page: Page) -> None:
        """Each tap gets the entries its filter admits and it has not read itself, in order."""
        for change, reach in zip(page.changes, page.reach, strict=True):
            frame: bytes | None = None
            for tap in self.taps.meeting(reach):
                if change.cursor <= tap.after or not tap.only.admits(reach):
                    continue
                frame = frame or self.render(change)
                if not tap.offer(change.cursor, frame):
                    self.dropped += 1
                    self.taps.discard(tap)
                    tap.drop()


async def _set_on(stop: asyncio.Event, ready: asyncio.Event) -> None:
    await stop.wait()
    ready.set()


@contextlib.asynccontextmanager
async def running(feed: Feed, render: Render, limit: int, buffer: int) -> AsyncIterator[Hub]:
    """The hub and its reading task, for the lifespan."""
    hub = Hub(feed, render, limit, buffer)
    async with task_during(hub.run()):
        try:
            yield hub
        finally:
            hub.close()
