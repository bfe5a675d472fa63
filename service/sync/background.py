"""Work that outlives the request that started it: kept while it runs, drained on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
# Within the time a container runtime allows for stopping (often 30 s), with room to spare.
DRAIN_SECONDS = 10.0


@contextlib.asynccontextmanager
async def task_during(work: Coroutine[Any, Any, object]) -> AsyncIterator[asyncio.Task[object]]:
    """Run `work` as a task while the block runs; at its end the task is cancelled, and
    awaited, so that none outlives its owner."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Background:
    """Tasks a caller stopped waiting for; each is kept until it ends, and none is lost."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._abandoned: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, work: Coroutine[Any, Any, T], seconds: float) -> T | None:
        """Wait at most `seconds` for the work; past that answer None while it goes on."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        done, _ = await asyncio.wait([task], timeout=seconds)
        if done:
            return task.result()
        self._abandoned.add(task)
        return None

    async def drain(self, grace: float = DRAIN_SECONDS) -> None:
        """Let the work finish for up to `grace` seconds, then cancel what remains."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            self._abandoned.discard(task)
        elif task in self._abandoned:
            self._abandoned.discard(task)
            # Its caller has stopped waiting: this line is the only trace of the failure.
            log.warning("background read failed", extra={"error": str(error)})
