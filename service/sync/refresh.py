"""Fetch-and-store: read keys from Jira in bulk, write them forward, report per key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from service.jira.answer import Reading
from service.jira.client import JiraClient
from service.metrics import Metrics
from service.model import Source
from service.storage import issues as store
from service.storage import tracking
from service.storage.pool import Executor
from service.sync.memo import Memo
from service.sync.readlog import ReadLog

# Landed flights remembered for readers who missed them; a few seconds' worth at most.
LANDINGS_KEPT = 10_000
KeyOutcome = Literal["refreshed", "unchanged", "not_found", "failed"]


@dataclass(frozen=True, slots=True)
class KeyResult:
    outcome: KeyOutcome
    error: str | None = None


@dataclass(slots=True)
class Report:
    """What a refresh did, per key; service.shapes gives it the shape the endpoints answer."""

    results: dict[str, KeyResult] = field(default_factory=dict)
    asked: int = 0  # keys asked for, some perhaps without a result yet
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def count(self, outcome: KeyOutcome) -> int:
        return sum(1 for result in self.results.values() if result.outcome == outcome)

    def merge(self, other: Report) -> None:
        self.results.update(other.results)
        self.asked += other.asked

    def keys(self, *outcomes: KeyOutcome) -> list[str]:
        return [key for key, result in self.results.items() if result.outcome in outcomes]


class Refresher:
    """Reads keys through the Jira client into the store; concurrent reads of a key share one.

    Each flight that lands is numbered: a reader that took `mark()` before it looked in the
    cache, and asks after a flight of its key landed, is answered by that flight instead of
    flying again (the cache it looked in may have been read just before the landing).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: JiraClient,
        ttl: float,
        metrics: Metrics | None = None,
        memo: Memo | None = None,
    ) -> None:
        self.pool = pool
        self.client = client
        self.ttl = ttl
        self.metrics = metrics
        self.memo = memo
        self._flights: dict[str, asyncio.Future[KeyResult]] = {}
        self._landings = 0
        self._landed: OrderedDict[str, tuple[int, KeyResult]] = OrderedDict()
        self.reads = ReadLog()  # keys served from the cache, tracked in batches

    def flying(self, key: str) -> bool:
        """Whether a read of the key is in the air."""
        return key in self._flights

    def mark(self) -> int:
        """A point in the flights' history; pass it to `refresh` as `since`."""
        return self._landings

    async def refresh(
        self,
        keys: Sequence[str],
        source: Source,
        since: int | None = None,
        report: Report | None = None,
    ) -> Report:
        """Read the keys now (joining reads in flight, or landed after `since`) and store them.

        `report` fills in as each chunk is stored, for a caller that stops waiting early.
        """
        report = Report() if report is None else report
        wanted = list(dict.fromkeys(keys))
        report.asked += len(wanted)
        landed = self._landed_since(wanted, since)
        report.results |= landed
        joined = {key: self._flights[key] for key in wanted if key in self._flights}
        mine = [key for key in wanted if key not in joined and key not in landed]
        if mine:
            await self._fly(mine, source, report)
        for key, flight in joined.items():
            report.results[key] = await asyncio.shield(flight)
        report.finished = time.monotonic()
        return report

    def _landed_since(self, keys: list[str], since: int | None) -> dict[str, KeyResult]:
        if since is None:
            return {}
        landed = ((key, self._landed.get(key)) for key in keys)
        return {key: entry[1] for key, entry in landed if entry and entry[0] > since}

    async def _fly(self, keys: list[str], source: Source, report: Report) -> None:
        loop = asyncio.get_running_loop()
        flights = {key: loop.create_future() for key in keys}
        self._flights.update(flights)
        try:
            await self._read_and_store(keys, source, report)
        except BaseException as exc:
            for key, flight in flights.items():
                if key in report.results:  # stored before the failure
                    flight.set_result(report.results[key])
                else:
                    flight.set_exception(exc)
                    flight.exception()  # retrieved here: joiners may be none
            raise
        finally:
            for key in keys:
                self._flights.pop(key, None)
        self._land({key: report.results[key] for key in keys})
        for key, flight in flights.items():
            flight.set_result(report.results[key])
        self._count(report, keys, source)

    def _land(self, results: dict[str, KeyResult]) -> None:
        self._landings += 1
        for key, result in results.items():
            self._landed[key] = (self._landings, result)
            self._landed.move_to_end(key)
        # Forgetting a landing is safe: a reader who missed it only flies again.
        while len(self._landed) > LANDINGS_KEPT:
            self._landed.popitem(last=False)

    def _count(self, report: Report, keys: list[str], source: Source) -> None:
        if self.metrics is not None:
            for key in keys:
                self.metrics.refreshed.labels(source, report.results[key].outcome).inc()

    async def _read_and_store(self, keys: list[str], source: Source, report: Report) -> None:
        """Store each part of the reading as it arrives, so a read cut short keeps it."""
        changed: set[int] = set()  # an issue may come in two parts: e.g. moved, then settled
        async with contextlib.aclosing(self.client.read_in_parts(keys)) as parts:
            async for reading in parts:
                report.results |= await self._store(keys, reading, source, changed)
        for key in keys:
            report.results.setdefault(key, KeyResult("failed", "Jira's answer did not mention it"))

    async def _store(
        self, keys: list[str], reading: Reading, source: Source, changed: set[int]
    ) -> dict[str, KeyResult]:
        async with self.pool.acquire() as connection, connection.transaction():
            outcomes = await store.upsert_issues(connection, reading.issues, source)
            await store.add_aliases(connection, reading.moved)
            await store.mark_not_found(connection, reading.not_found, source)
            failed = {key: problem for key, problem in reading.invalid}
            await store.mark_failed(connection, list(failed), "unusable answer from Jira")
            await self._schedule(connection, reading, source)
        if self.memo is not None:
            # PostgreSQL tells every replica too; this makes our own next read see it at once.
            self.memo.drop(issue.id for issue in reading.issues)
            self.memo.forget([*reading.not_found, *failed])
        changed.update(i for i, outcome in outcomes.items() if outcome in ("created", "updated"))
        return _results(keys, reading, changed, failed)

    async def _schedule(self, connection: Executor, reading: Reading, source: Source) -> None:
        for old_key, issue_id in reading.moved.items():
            new_key = _current_key(reading, issue_id)
            await tracking.retarget(connection, [old_key], new_key, self.ttl)
        if source != "poll":  # the poller schedules its own keys; a claim defers fresh ones
            await tracking.track(connection, [issue.key for issue in reading.issues])


def _current_key(reading: Reading, issue_id: int) -> str:
    return next(issue.key for issue in reading.issues if issue.id == issue_id)


def _results(
    keys: list[str], reading: Reading, changed: set[int], failed: dict[str, str]
) -> dict[str, KeyResult]:
    """The outcome of each asked key this part of a reading answers."""
    ids = {issue.key: issue.id for issue in reading.issues} | reading.moved
    ids |= {str(issue.id): issue.id for issue in reading.issues}
    not_found = set(reading.not_found)
    results = {}
    for key in keys:
        if key in ids:
            outcome: KeyOutcome = "refreshed" if ids[key] in changed else "unchanged"
            results[key] = KeyResult(outcome)
        elif key in not_found:
            results[key] = KeyResult("not_found")
        elif key in failed:
            results[key] = KeyResult("failed", failed[key])
    return results
