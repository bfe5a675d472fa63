"""The changed-since sync round: lease the tracked projects, search their changes, store them.

A round starts at S (PostgreSQL's clock, shared by replicas). Each project is searched from
its watermark (its last round's S minus the overlap) and, once every page of it is stored,
its watermark moves to S minus the overlap, which is also when its issues are known to be
current ("verified"): the overlap absorbs Jira's search index lag and clock skew, and the
next round reads that stretch again. A round killed mid-way never moves a watermark, so the
next one covers the same window again. A project seen for the first time is searched only
over the overlap: issues read before its coverage began are not vouched for by the sync and
stay with the TTL poll until their next read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from service.config import Settings
from service.jira.client import JiraClient, JiraError
from service.jira.paging import chunks
from service.jira.search import PROJECTS_PER_QUERY, ChangeSearch
from service.metrics import Metrics
from service.model import Issue
from service.storage import issues as store
from service.storage import watermarks
from service.storage.pool import Executor
from service.storage.watermarks import Claim
from service.sync.memo import Memo
from service.sync.poller import owner_id

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RoundReport:
    """What one round did: projects synced and failed, changes found, pages read."""

    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    changes: int = 0
    pages: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def done(self) -> list[str]:
        return [*self.synced, *self.failed]

    def as_json(self) -> dict[str, object]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {
            "synced": len(self.synced),
            "failed": self.failed,
            "changes": self.changes,
            "pages": self.pages,
            "duration_ms": round((end - self.started) * 1000),
        }


Progress = Callable[[int], None]  # projects done so far


class Syncer:
    """Runs sync rounds for this process; replicas share the work through project leases."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: JiraClient,
        settings: Settings,
        metrics: Metrics | None = None,
        memo: Memo | None = None,
    ) -> None:
        self.pool, self.client, self.settings = pool, client, settings
        self.metrics, self.memo = metrics, memo
        self.owner = owner_id()
        self.batch = PROJECTS_PER_QUERY  # projects leased at a time

    async def sync(self, progress: Progress | None = None, every: float = 0.0) -> RoundReport:
        """One round over the tracked projects no other replica is syncing now.

        `every` is the caller's interval: a project another replica verified less than
        half of it ago is left alone rather than read twice.
        """
        report = RoundReport()
        min_age = self.settings.sync_overlap + every / 2 if every else 0.0
        while claims := await watermarks.claim(
            self.pool, self.owner, self.settings.lease_seconds, self.batch, report.done, min_age
        ):
            try:
                for group in self._groups(claims):
                    await self._sync_group(group, report)
            finally:
                # A round cut short hands its projects back unchanged, for the next round.
                left = [claim.project for claim in claims if claim.project not in report.done]
                await asyncio.shield(watermarks.release(self.pool, self.owner, left))
            if progress is not None:
                progress(len(report.done))
        report.finished = time.monotonic()
        self._count(report)
        return report

    def _groups(self, claims: list[Claim]) -> list[_Group]:
        """Projects with similar watermarks together, each group searching its widest window."""
        overlap = timedelta(seconds=self.settings.sync_overlap)
        ordered = sorted(claims, key=lambda claim: claim.verified_at or claim.started)
        groups = []
        for part in chunks([claim.project for claim in ordered], PROJECTS_PER_QUERY):
            mine = [claim for claim in ordered if claim.project in part]
            start = min(claim.verified_at or claim.started - overlap for claim in mine)
            groups.append(_Group(part, mine[0].started, start, mine[0].started - overlap))
        return groups

    async def _sync_group(self, group: _Group, report: RoundReport) -> None:
        seconds = (group.started - group.since).total_seconds()
        search = ChangeSearch(self.client, list(group.projects), seconds, group.since)
        try:
            async for page in search.issues():
                report.changes += await self._store(page)
                await watermarks.renew(
                    self.pool, self.owner, group.projects, self.settings.lease_seconds
                )
        except JiraError as exc:
            for project in search.projects:
                await self._fail(project, str(exc), report)
            search.projects = []
        finally:
            report.pages += search.pages
        for project, reason in search.dropped.items():
            await self._fail(project, f"dropped from the search: {reason}", report)
        if not search.projects:
            return
        # Only now, with every page stored: the window up to `verified` has been read.
        await watermarks.advance(
            self.pool, self.owner, search.projects, group.verified, group.verified
        )
        report.synced += search.projects

    async def _store(self, page: Sequence[Issue]) -> int:
        """Write forward the page's issues that the cache holds or tracks; count changes."""
        async with self.pool.acquire() as connection, connection.transaction():
            kept = await _cached_or_tracked(connection, page)
            outcomes = await store.upsert_issues(connection, kept, "sync")
        if self.memo is not None:
            self.memo.drop(issue.id for issue in kept)
        return sum(1 for outcome in outcomes.values() if outcome in ("created", "updated"))

    async def _fail(self, project: str, reason: str, report: RoundReport) -> None:
        report.failed[project] = reason
        if await watermarks.fail(self.pool, self.owner, project, reason):
            log.warning("sync of project %s failed: %s", project, reason)

    def _count(self, report: RoundReport) -> None:
        if self.metrics is None:
            return
        self.metrics.sync_rounds.labels("failed" if report.failed else "ok").inc()
        self.metrics.sync_changes.inc(report.changes)
        self.metrics.sync_pages.inc(report.pages)
        self.metrics.sync_seconds.observe((report.finished or time.monotonic()) - report.started)


@dataclass(frozen=True, slots=True)
class _Group:
    projects: list[str]
    started: datetime
    since: datetime  # where the search window begins
    verified: datetime  # what the watermark becomes once every page is stored


async def _cached_or_tracked(connection: Executor, page: Sequence[Issue]) -> list[Issue]:
    # A tracked project holds issues nobody asked for: those are not worth keeping.
    rows = await connection.fetch(
        "SELECT t.id FROM unnest($1::bigint[], $2::text[]) AS t(id, key)"
        " WHERE EXISTS (SELECT 1 FROM issues i WHERE i.id = t.id)"
        " OR EXISTS (SELECT 1 FROM tracked k WHERE k.key = t.key)",
        [issue.id for issue in page],
        [issue.key for issue in page],
    )
    known = {row["id"] for row in rows}
    return [issue for issue in page if issue.id in known]
