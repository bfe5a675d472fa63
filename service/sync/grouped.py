"""Group commit: deliveries that arrive together are written in one statement and one commit.

Each caller is answered only after the commit that holds its delivery, so an acknowledged
webhook is durable. Nothing waits to fill a group: a delivery that finds a writer free is
written at once; those arriving while both writers are busy form the next group, so that groups
grow with the load, and so does what each commit (a WAL flush) and round trip carries. Two
writers, so that one group's round trip overlaps the next one's: with one, the event loop sat
idle during each commit at saturation. Concurrent groups cannot deadlock on issues, which each
statement locks in id order, and write forward only (storage/issues.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg

from service.storage import inbox
from service.storage.inbox import Update
from service.storage.issues import Outcome
from service.storage.pool import DatabaseUnavailableError

log = logging.getLogger(__name__)
# A group's statement stays short, so that its first caller's wait stays short too.
MAX_GROUP = 256
WRITERS = 2
Waiting = tuple[Update, "asyncio.Future[Outcome | None]"]


class GroupCommit:
    """Writes the deliveries handed to it in groups, `writers` writer tasks at a time."""

    def __init__(
        self, pool: asyncpg.Pool, max_group: int = MAX_GROUP, writers: int = WRITERS
    ) -> None:
        self.pool = pool
        self.max_group = max_group
        self.writers = writers
        self._queue: list[Waiting] = []
        self._writing: set[asyncio.Task[None]] = set()
        self.groups = self.written = 0

    async def write(self, update: Update) -> Outcome | None:
        """Record the delivery and write its issue; None for a delivery seen before."""
        future: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._queue.append((update, future))
        if len(self._writing) < self.writers:
            writer = asyncio.create_task(self._drain())
            self._writing.add(writer)
            writer.add_done_callback(self._writing.discard)
        # Shielded: a caller that goes away does not cancel a write others wait on.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            await self._commit(group)

    async def _commit(self, group: list[Waiting]) -> None:
        try:
            outcomes = await self._record(group)
        except DatabaseUnavailableError as exc:
            _fail(group, exc)
            return
        except asyncpg.PostgresError as exc:
            if len(group) == 1:
                _fail(group, exc)
                return
            # One delivery PostgreSQL refuses must not fail the others: each alone.
            log.warning("group write refused; writing each alone", extra={"error": str(exc)})
            for waiting in group:
                await self._commit([waiting])
            return
        except BaseException as exc:
            _fail(group, exc)
            raise
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _record(self, group: Sequence[Waiting]) -> list[Outcome | None]:
        async with self.pool.acquire() as connection:
            outcomes = await inbox.record_and_write(connection, [u for u, _ in group])
        self.groups += 1
        self.written += len(group)
        return outcomes


def _fail(group: Sequence[Waiting], exc: BaseException) -> None:
    for _, future in group:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
