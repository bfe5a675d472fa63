"""Which keys were read lately, kept in memory and written to the tracked set in batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from service.storage import tracking
from service.storage.pool import Executor

# Reads are served from the memo without PostgreSQL: a key's read is recorded at most
# once per this many seconds, so TRACK_READS_FOR is honoured to within this much.
RECORD_EVERY_SECONDS = 600.0


class ReadLog:
    """Read keys waiting to be recorded, and when each was last recorded."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._recorded: dict[str, float] = {}
        self._pending: set[str] = set()

    def note(self, keys: Iterable[str]) -> None:
        now = self.clock()
        for key in keys:
            if now - self._recorded.get(key, -RECORD_EVERY_SECONDS) >= RECORD_EVERY_SECONDS:
                self._recorded[key] = now
                self._pending.add(key)

    async def flush(self, executor: Executor) -> int:
        """Record pending reads in one statement, tracking keys not tracked; answer how many."""
        keys, self._pending = self._pending, set()
        cutoff = self.clock() - RECORD_EVERY_SECONDS
        self._recorded = {key: at for key, at in self._recorded.items() if at > cutoff}
        if keys:
            try:
                await tracking.touch(executor, list(keys))
            except BaseException:
                self._pending |= keys  # recorded next time instead
                raise
        return len(keys)
