"""Fetch-and-store: read keys from Jira in bulk, write them forward, report per key."""

from __future__ import annotations

import asyncio
import time
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
from service.sync.memo import Memo
from service.sync.readlog import ReadLog

KeyOutcome = Literal["refreshed", "unchanged", "not_found", "failed"]


@dataclass(frozen=True, slots=True)
class KeyResult:
    outcome: KeyOutcome
    error: str | None = None


@dataclass(slots=True)
class Report:
    """What a refresh did, per key, in the shape the refresh endpoints answer."""

    results: dict[str, KeyResult] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def count(self, outcome: KeyOutcome) -> int:
        return sum(1 for result in self.results.values() if result.outcome == outcome)

    def merge(self, other: Report) -> None:
        self.results.update(other.results)

    def keys(self, *outcomes: KeyOutcome) -> list[str]:
        return [key for key, result in self.results.items() if result.outcome in outcomes]

    def as_json(self) -> dict[str, object]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {
            "requested": len(self.results),
            "refreshed": self.count("refreshed"),
            "unchanged": self.count("unchanged"),
            "not_found": self.count("not_found"),
            "failed": self.count("failed"),
            "errors": [
                {"key": key, "error": result.error}
                for key, result in self.results.items()
                if result.error is not None
            ],
            "duration_ms": round((end - self.started) * 1000),
        }


class Refresher:
    """Reads keys through the Jira client into the store; concurrent reads of a key share one."""

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
        self.reads = ReadLog()  # keys served from the cache, tracked in batches

    async def refresh(self, keys: Sequence[str], source: Source) -> Report:
        """Read the keys now (joining reads already in flight) and store what Jira says."""
        joined = {key: self._flights[key] for key in keys if key in self._flights}
        mine = [key for key in dict.fromkeys(keys) if key not in joined]
        report = Report()
        if mine:
            report.merge(await self._fly(mine, source))
        for key, flight in joined.items():
            report.results[key] = await asyncio.shield(flight)
        report.finished = time.monotonic()
        return report

    async def _fly(self, keys: list[str], source: Source) -> Report:
        loop = asyncio.get_running_loop()
        flights = {key: loop.create_future() for key in keys}
        self._flights.update(flights)
        try:
            report = await self._read_and_store(keys, source)
        except BaseException as exc:
            for flight in flights.values():
                flight.set_exception(exc)
                flight.exception()  # retrieved here: joiners may be none
            raise
        finally:
            for key in keys:
                self._flights.pop(key, None)
        for key, flight in flights.items():
            flight.set_result(report.results[key])
        self._count(report, source)
        return report

    def _count(self, report: Report, source: Source) -> None:
        if self.metrics is not None:
            for result in report.results.values():
                self.metrics.refreshed.labels(source, result.outcome).inc()

    async def _read_and_store(self, keys: list[str], source: Source) -> Report:
        reading = await self.client.read_issues(keys)
        async with self.pool.acquire() as connection, connection.transaction():
            outcomes = await store.upsert_issues(connection, reading.issues, source)
            await store.add_aliases(connection, reading.moved)
            await store.mark_not_found(connection, reading.not_found, source)
            failed = {key: problem for key, problem in reading.invalid}
            await store.mark_failed(connection, list(failed), "unusable answer from Jira")
            for old_key, issue_id in reading.moved.items():
                new_key = _current_key(reading, issue_id)
                await tracking.retarget(connection, [old_key], new_key, self.ttl)
            if source != "poll":  # the poller schedules its own keys; a claim defers fresh ones
                await tracking.track(connection, [i.key for i in reading.issues])
        if self.memo is not None:
            # PostgreSQL tells every replica too; this makes our own next read see it at once.
            self.memo.drop(issue.id for issue in reading.issues)
            self.memo.forget([*reading.not_found, *failed])
        return _report(keys, reading, outcomes, failed)


def _current_key(reading: Reading, issue_id: int) -> str:
    return next(issue.key for issue in reading.issues if issue.id == issue_id)


def _report(
    keys: list[str], reading: Reading, outcomes: dict[int, store.Outcome], failed: dict[str, str]
) -> Report:
    ids = {issue.key: issue.id for issue in reading.issues} | reading.moved
    ids |= {str(issue.id): issue.id for issue in reading.issues}
    not_found = set(reading.not_found)
    report = Report()
    for key in keys:
        if key in ids:
            changed = outcomes.get(ids[key]) in ("created", "updated")
            report.results[key] = KeyResult("refreshed" if changed else "unchanged")
        elif key in not_found:
            report.results[key] = KeyResult("not_found")
        else:
            error = failed.get(key, "Jira's answer did not mention this key")
            report.results[key] = KeyResult("failed", error)
    return report
