"""The changed-since sync round: lease the tracked projects, search their changes, store them.

A round starts at S (PostgreSQL's clock, shared by replicas). Each project is searched from
its watermark and, once every page of it is stored, its watermark moves to S minus the
round's overlap, which is also when its issues are known to be current ("verified"): the
overlap absorbs Jira's search index lag, and the next round reads that stretch again. A
round killed mid-way never moves a watermark, so the next one covers the same window again;
its leases are short and renewed while it runs, so another replica takes over within about
one interval. A project seen for the first time is searched only over the overlap: issues
read before its coverage began are not vouched for by the sync and stay with the TTL poll
until their next read.

Three corrections keep the window honest (see service/jira/search.py for the JQL):
- Jira's clock is measured each round (serverInfo); the watermark is moved into Jira's clock
  before it is compared with Jira's `updated` stamps, so a Jira 90 s behind does not stop
  the paging early.
- JQL compares dates to the minute: the window reaches back to the start of the watermark's
  minute (in Jira's clock), whatever the interval and overlap, so a change at :59.5 is
  inside it.
- The overlap is what can still be missing: twice the index lag observed lately, plus the
  skew's uncertainty (at least MIN_OVERLAP), capped by JIRA_SYNC_OVERLAP; the whole
  JIRA_SYNC_OVERLAP while no webhook arrived in the last hour, since the lag is then unseen.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from service.config import Settings
from service.jira.client import JiraClient, JiraError, ServerClock
from service.jira.paging import chunks
from service.jira.search import PROJECTS_PER_QUERY, ChangeSearch
from service.metrics import Metrics
from service.model import Issue
from service.storage import issues as store
from service.storage import registration, watermarks
from service.storage.watermarks import Claim
from service.sync.lagwatch import LagWatch
from service.sync.leases import lease_for, log_takeover, owner_id, renewing
from service.sync.memo import Memo

log = logging.getLogger(__name__)
MIN_OVERLAP = 5.0  # seconds: the overlap however small the lag looks
PAGING_ALLOWANCE = 60.0  # seconds a search's later pages may start after its first
LAG_MEMORY = 3600.0  # seconds a measured index lag counts, and webhooks count as arriving


@dataclass(slots=True)
class RoundReport:
    """What one round did: projects synced, failed and unknown to Jira, changes, pages."""

    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)  # projects Jira does not know
    changes: int = 0
    pages: int = 0
    overlap: float = 0.0
    skew: float | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def done(self) -> list[str]:
        return [*self.synced, *self.failed, *self.unknown]

    def as_json(self) -> dict[str, object]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {
            "synced": len(self.synced),
            "failed": self.failed,
            "unknown_to_jira": sorted(self.unknown),
            "changes": self.changes,
            "pages": self.pages,
            "overlap_seconds": round(self.overlap, 1),
            "jira_clock_skew_seconds": None if self.skew is None else round(self.skew, 2),
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
        self.lease = lease_for(settings.sync_interval, settings.lease_seconds)
        self.batch = PROJECTS_PER_QUERY  # projects leased at a time
        self.clock = ServerClock(0.0, 0.0)
        self.lag = LagWatch()

    async def sync(self, progress: Progress | None = None, every: float = 0.0) -> RoundReport:
        """One round over the tracked projects no other replica is syncing now.

        `every` is the caller's interval: a project another replica verified less than
        half of it ago is left alone rather than read twice.
        """
        report = RoundReport()
        await self._measure_clock(report)
        report.overlap = await self._overlap()
        while claims := await watermarks.claim(
            self.pool, self.owner, self.lease, self.batch, report.done, every / 2
        ):
            log_takeover("the sync of", [(c.project, c.taken_from) for c in claims if c.taken_from])
            held = [claim.project for claim in claims]
            try:
                async with renewing(self._renewer(held), self.lease):
                    for group in self._groups(claims, report.overlap):
                        await self._sync_group(group, report)
            finally:
                # A round cut short hands its projects back unchanged, for the next round.
                left = [project for project in held if project not in report.done]
                await asyncio.shield(watermarks.release(self.pool, self.owner, left))
            if progress is not None:
                progress(len(report.done))
        report.finished = time.monotonic()
        self._count(report)
        return report

    def _renewer(self, projects: list[str]) -> Callable[[], Awaitable[None]]:
        async def renew() -> None:
            await watermarks.renew(self.pool, self.owner, projects, self.lease)

        return renew

    async def _measure_clock(self, report: RoundReport) -> None:
        """Jira's clock against ours, once a round; on failure the last measure stands."""
        try:
            self.clock = await self.client.server_clock()
        except JiraError as exc:
            log.warning("cannot read Jira's clock (serverInfo): %s", exc)
            return
        report.skew = self.clock.skew
        await watermarks.record_skew(self.pool, self.clock.skew, self.clock.error)

    async def _overlap(self) -> float:
        """What can still be missing: twice the lag seen lately plus the skew's uncertainty."""
        configured = self.settings.sync_overlap
        delivered = await registration.last_delivery(self.pool)
        if delivered is None or (datetime.now(UTC) - delivered).total_seconds() > LAG_MEMORY:
            return configured  # no webhooks: the index lag cannot be seen, so assume the worst
        lag = (await watermarks.jira_clock(self.pool)).index_lag
        needed = max(MIN_OVERLAP, 2 * lag + self.clock.error + 1.0)
        return min(configured, needed) if configured > 0 else 0.0

    def _groups(self, claims: list[Claim], overlap: float) -> list[_Group]:
        """Projects with similar watermarks together, each group searching its widest window."""
        back = timedelta(seconds=overlap)
        ordered = sorted(claims, key=lambda claim: claim.verified_at or claim.started)
        groups = []
        for part in chunks([claim.project for claim in ordered], PROJECTS_PER_QUERY):
            mine = [claim for claim in ordered if claim.project in part]
            start = min(claim.verified_at or claim.started - back for claim in mine)
            groups.append(_Group(part, mine[0].started, start, mine[0].started - back, overlap))
        return groups

    async def _sync_group(self, group: _Group, report: RoundReport) -> None:
        since, seconds = self._window(group)
        searched = datetime.now(UTC) + timedelta(seconds=self.clock.skew)  # Jira's clock
        search = ChangeSearch(self.client, list(group.projects), seconds, since)
        try:
            async for page in search.issues():
                report.changes += await self._store(page)
        except JiraError as exc:
            for project in search.projects:
                await self._fail(project, str(exc), report)
            search.projects = []
        finally:
            report.pages += search.pages
        for project, reason in search.dropped.items():
            await self._unknown(project, reason, report)
        if not search.projects:
            return
        self.lag.searched(search.projects, searched, since)
        # Only now, with every page stored: the window up to `verified` has been read.
        await watermarks.advance(
            self.pool, self.owner, search.projects, group.verified, group.verified, group.overlap
        )
        report.synced += search.projects

    def _window(self, group: _Group) -> tuple[datetime, float]:
        """The watermark in Jira's clock, and the seconds back the JQL must reach from Jira's
        now: to the start of the watermark's minute, since JQL compares to the minute."""
        skew = timedelta(seconds=self.clock.skew)
        doubt = timedelta(seconds=self.clock.error + 0.05)
        since = group.since + skew - doubt
        minute = since.replace(second=0, microsecond=0)
        jira_now = datetime.now(UTC) + skew + doubt
        seconds = (jira_now - minute).total_seconds() + PAGING_ALLOWANCE
        return since, 60.0 * math.ceil(seconds / 60.0)

    async def _store(self, page: Sequence[Issue]) -> int:
        """Write forward the page's issues that the cache holds or tracks; count changes."""
        async with self.pool.acquire() as connection, connection.transaction():
            known = await watermarks.known_versions(connection, page)
            kept = [issue for issue in page if issue.id in known]
            outcomes = await store.upsert_issues(connection, kept, "sync")
        if self.memo is not None:
            self.memo.drop(issue.id for issue in kept)
        if (lag := self.lag.observe(page, known)) is not None:
            await watermarks.record_lag(self.pool, lag)
        return sum(1 for outcome in outcomes.values() if outcome in ("created", "updated"))

    async def _fail(self, project: str, reason: str, report: RoundReport) -> None:
        report.failed[project] = reason
        if await watermarks.fail(self.pool, self.owner, project, reason):
            log.warning("sync of project %s failed: %s", project, reason)

    async def _unknown(self, project: str, reason: str, report: RoundReport) -> None:
        """A project Jira does not know (a mistyped link, say): a warning, not a failure."""
        report.unknown[project] = reason
        if await watermarks.fail(self.pool, self.owner, project, reason, unknown=True):
            log.warning("Jira does not know project %s (its keys are left to the poll)", project)

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
    since: datetime  # where the search window begins (PostgreSQL's clock)
    verified: datetime  # what the watermark becomes once every page is stored
    overlap: float
