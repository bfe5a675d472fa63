"""The process's one LISTEN connection, for every channel it follows (the memo, the feed).

LISTEN needs a session of its own, so it connects to DATABASE_LISTEN_URL: PostgreSQL itself,
never a transaction pooler. A connection can die without a word, and notifications sent while
nobody listened are lost for good (across a failover, say): so it pings, reconnects by itself
(a multi-host DSN finds the new primary), and tells each subscriber when it is up, so that it
reloads whatever the notifications kept current, and when it is down, so that it stops
trusting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from service.storage.pool import UNREACHABLE, connect_session

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 1.0
PING_SECONDS = 5.0
NAME = "listener"  # application_name: jira-status-cache listener
LOST: tuple[type[BaseException], ...] = (*UNREACHABLE, asyncpg.PostgresError)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """What one follower of a channel does with a notification, a (re)connection, a loss."""

    channel: str
    on_notify: Callable[[str], None]
    on_up: Callable[[], None]
    on_down: Callable[[], None]


class Listener:
    """One LISTEN connection for every subscriber; `live` while it is connected."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.live = False
        self.tried = asyncio.Event()  # the first connection attempt has ended
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Before `running`: a follower of `subscriber.channel`."""
        self._subscribers.append(subscriber)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the connection until `stop`, retrying each second while it is down."""
        while not stop.is_set():
            try:
                await self._listen_once(stop)
            except LOST as exc:
                log.warning("change listener lost", extra={"error": type(exc).__name__})
            finally:
                self.tried.set()
            await _set_within(stop, RECONNECT_SECONDS)

    async def _listen_once(self, stop: asyncio.Event) -> None:
        connection = await connect_session(self.dsn, wait=PING_SECONDS, name=NAME)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        try:
            for subscriber in self._subscribers:
                await connection.add_listener(subscriber.channel, _handler(subscriber))
            self._up()
            while not await _ended(lost, stop):
                # A connection can die without a word (no FIN): ask it something now and then.
                await connection.fetchval("SELECT 1", timeout=PING_SECONDS)
        finally:
            self._down()
            connection.terminate()

    def _up(self) -> None:
        self.live = True
        self.tried.set()
        for subscriber in self._subscribers:
            subscriber.on_up()  # what was sent while nobody listened is lost: reload

    def _down(self) -> None:
        if self.live:
            self.live = False
            for subscriber in self._subscribers:
                subscriber.on_down()


@contextlib.asynccontextmanager
async def running(listener: Listener) -> AsyncIterator[Listener]:
    """The listener's task for the lifespan; ready once its first attempt has ended, so that
    what follows it is live from its start when PostgreSQL answers."""
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        await _set_within(listener.tried, PING_SECONDS)
        yield listener
    finally:
        stop.set()
        # Connecting to a PostgreSQL that does not answer could take the connect timeout.
        done, _ = await asyncio.wait([task], timeout=1.0)
        if not done:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _handler(subscriber: Subscriber) -> Callable[[Any, int, str, object], None]:
    def handle(connection: Any, pid: int, channel: str, payload: object) -> None:
        subscriber.on_notify(str(payload))

    return handle


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


async def _ended(lost: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait up to PING_SECONDS for the connection to be lost or the listener stopped."""
    waits = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(stop.wait())]
    done, pending = await asyncio.wait(waits, timeout=PING_SECONDS, return_when="FIRST_COMPLETED")
    for task in pending:
        task.cancel()
    return bool(done)
