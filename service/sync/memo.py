"""An in-process copy of hot cached issues, dropped by PostgreSQL's change notifications."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

import asyncpg

from service.jira.pacing import Clock
from service.model import CachedIssue
from service.storage import issues as store
from service.storage.pool import DatabaseUnavailableError
from service.sync.listener import Subscriber

CHANNEL = "jsc_issues"  # see migrations/003_notify.sql


class Memo:
    """Cached issues by asked key, trusted only while the change listener is connected.

    While it is not, entries stay (each until its TTL) but are served only when PostgreSQL
    cannot be reached at all (a failover, say): nothing can change the cache then, so they are
    as good as what was last served. Every (re)connection empties it: what changed while nobody
    listened was never announced.

    A read that raced a change must not store what it read: each drop bumps a counter and
    remembers it per issue id, and `put` refuses rows whose issue was dropped after the
    read began (`mark()` taken before the read).
    """

    def __init__(self, size: int, ttl: float, clock: Clock = time.monotonic) -> None:
        self.size, self.ttl = size, ttl
        self._clock = clock
        self.live = False
        self._entries: OrderedDict[str, tuple[CachedIssue, float]] = OrderedDict()
        self._keys_of: dict[int, set[str]] = {}
        self._dropped_at: dict[int, int] = {}
        self._counter = 0
        self._flushed_at = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def mark(self) -> int:
        return self._counter

    def get(self, keys: Iterable[str]) -> dict[str, CachedIssue]:
        if not self.live:
            return {}
        now, found = self._clock(), {}
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry[1] > now:
                self._entries.move_to_end(key)
                found[key] = entry[0]
        return found

    def put(self, rows: dict[str, CachedIssue], mark: int) -> None:
        if not self.live or mark < self._flushed_at:
            return
        expires = self._clock() + self.ttl
        for key, cached in rows.items():
            if self._dropped_at.get(cached.issue.id, -1) >= mark:
                continue  # changed while we read it: what we read may be old
            self._entries[key] = (cached, expires)
            self._entries.move_to_end(key)
            self._keys_of.setdefault(cached.issue.id, set()).add(key)
        while len(self._entries) > self.size:
            self._evict(*self._entries.popitem(last=False))

    def drop(self, ids: Iterable[int]) -> None:
        self._counter += 1
        for issue_id in ids:
            self._dropped_at[issue_id] = self._counter
            for key in self._keys_of.pop(issue_id, ()):
                self._entries.pop(key, None)
        if len(self._dropped_at) > 4 * self.size:
            self.clear()  # keeps the bookkeeping bounded; rare

    def clear(self) -> None:
        self._counter += 1
        self._flushed_at = self._counter
        self._entries.clear()
        self._keys_of.clear()
        self._dropped_at.clear()

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the issues behind these keys, e.g. keys a read just found missing."""
        ids = [entry[0].issue.id for key in keys if (entry := self._entries.get(key))]
        self.drop(ids)

    def fallback(self, keys: Iterable[str]) -> dict[str, CachedIssue]:
        """Unexpired entries for the keys, live or not: for when PostgreSQL is unreachable."""
        now = self._clock()
        entries = ((key, self._entries.get(key)) for key in keys)
        return {key: entry[0] for key, entry in entries if entry is not None and entry[1] > now}

    def subscriber(self) -> Subscriber:
        return Subscriber(CHANNEL, self.on_notify, self.on_up, self.on_down)

    def on_up(self) -> None:
        self.clear()  # changes made while nobody listened went unheard
        self.live = True

    def on_down(self) -> None:
        self.live = False

    def on_notify(self, payload: str) -> None:
        if payload == "*":
            self.clear()
            return
        self.drop(int(part) for part in payload.split(",") if part.isdigit())

    def _evict(self, key: str, entry: tuple[CachedIssue, float]) -> None:
        keys = self._keys_of.get(entry[0].issue.id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[entry[0].issue.id]


async def select(pool: asyncpg.Pool, memo: Memo | None, keys: list[str]) -> dict[str, CachedIssue]:
    """The cached issues for the keys: from memory when live, else from PostgreSQL."""
    if memo is None:
        return await store.select_by_keys(pool, keys)
    found = memo.get(keys)
    missing = [key for key in keys if key not in found]
    memo.hits += len(found)
    memo.misses += len(missing)
    if missing:
        mark = memo.mark()
        try:
            read = await store.select_by_keys(pool, missing)
        except DatabaseUnavailableError:
            kept = memo.fallback(missing)
            if len(kept) < len(missing):
                raise
            return found | kept
        memo.put(read, mark)
        found |= read
    return found
