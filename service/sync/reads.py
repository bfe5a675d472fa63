"""Read-through: cached issues, with misses and entries over a wanted age read from Jira."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from service.config import Settings
from service.jira.errors import JiraError
from service.model import CachedIssue
from service.storage import issues as store
from service.sync import memo as memos
from service.sync.background import Background
from service.sync.refresh import Refresher, Report


class JiraSlowError(TimeoutError):
    """Jira did not answer a read in time; the read goes on and fills the cache."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"Jira did not answer within {seconds:g}s; retry later")
        self.seconds = seconds


class Reader:
    """Serves reads from the memo and PostgreSQL, reading misses through Jira, bounded.

    A read that outlasts its bound goes on in the background, kept until it ends and
    drained on shutdown, so that the cache is filled for the next caller.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        memo: memos.Memo | None,
        refresher: Refresher | None,
        settings: Settings,
    ) -> None:
        self.pool, self.memo, self.refresher = pool, memo, refresher
        self.settings = settings
        self.background = Background()

    async def read(self, keys: list[str], max_age: float | None = None) -> dict[str, CachedIssue]:
        """The cached issues for the keys; misses and entries over `max_age` read from Jira."""
        refresher = self.refresher
        mark = refresher.mark() if refresher is not None else 0
        found = await self.cached(keys)
        if refresher is None:
            return found
        refresher.reads.note(found)  # whatever is read stays tracked, recorded in batches
        wanted = await self._wanted(keys, found, max_age)
        if not wanted:
            return found  # the hot path: no round trip to PostgreSQL at all
        try:
            read = refresher.refresh(wanted, "refresh", since=mark)
            if await self.background.run(read, self.settings.read_timeout) is None:
                raise JiraSlowError(self.settings.read_timeout)
        except (JiraError, JiraSlowError):
            if all(key in found for key in wanted):
                return found  # Jira cannot answer but the cache can: serve it, stale.
            raise
        return await self.cached(keys)

    async def refresh(self, keys: Sequence[str], report: Report) -> bool:
        """Read the keys from Jira into `report`; answer False if still going at the bound."""
        if self.refresher is None:
            raise RuntimeError("refresh needs Jira: check reader.refresher first")
        work = self.refresher.refresh(keys, "refresh", report=report)
        return await self.background.run(work, self.settings.refresh_timeout) is not None

    async def cached(self, keys: list[str]) -> dict[str, CachedIssue]:
        return await memos.select(self.pool, self.memo, keys)

    async def close(self) -> None:
        """Let background reads finish, briefly; then cancel what remains."""
        await self.background.drain()

    async def _wanted(
        self, keys: list[str], found: dict[str, CachedIssue], max_age: float | None
    ) -> list[str]:
        now = datetime.now(UTC)
        wanted = [key for key in keys if key not in found or _older(found[key], max_age, now)]
        if not wanted or all(key in found for key in wanted):
            return wanted
        # A key Jira just said it does not know is not asked again until the negative TTL ends.
        known_missing = await store.recently_missing(
            self.pool, [key for key in wanted if key not in found], self.settings.negative_ttl
        )
        return [key for key in wanted if key not in known_missing]


def _older(cached: CachedIssue, max_age: float | None, now: datetime) -> bool:
    return max_age is not None and (now - cached.fetched_at).total_seconds() > max_age
