"""The in-process APScheduler: the poll cycle, and pruning delivery records and unread keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service.config import Settings
from service.metrics import Metrics
from service.shapes import shape_report
from service.storage import changes, inbox, tracking
from service.sync import registrar
from service.sync.changed_since import Syncer
from service.sync.memo import Memo
from service.sync.poller import Poller

if TYPE_CHECKING:
    from service.sync.wiring import Parts, Watch

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600
VERIFIED_EVERY_SECONDS = 5  # how stale another replica's sync may look here
HEALTH_EVERY_SECONDS = 30


async def poll_job(poller: Poller) -> None:
    # The top of a background job: whatever fails is logged, and the next run tries again.
    try:
        report = await poller.poll()
    except asyncio.CancelledError:
        # scheduler.shutdown() cancels this wait; Poller.stop sees the cycle to its end.
        return
    except Exception:
        log.exception("poll run failed")
        return
    if report.results:
        shaped = shape_report(report, complete=True)
        log.info("poll run", extra={"report": msgspec.to_builtins(shaped)})


async def prune_job(pool: asyncpg.Pool, days: float, letter_days: float = 14.0) -> None:
    try:
        pruned = await inbox.prune_deliveries(pool, days)
        letters = await inbox.prune_dead_letters(pool, letter_days)
    except Exception:
        log.exception("pruning webhook deliveries failed")
        return
    log.info("pruned webhook deliveries", extra={"count": pruned, "dead_letters": letters})


async def forget_job(poller: Poller, seconds: float) -> None:
    """Stop tracking keys neither linked nor read for TRACK_READS_FOR."""
    try:
        await poller.refresher.reads.flush(poller.pool)  # reads not yet recorded count
        forgotten = await tracking.forget_unread(poller.pool, seconds)
    except Exception:
        log.exception("forgetting unread keys failed")
        return
    log.info("forgot unread tracked keys", extra={"count": forgotten})


async def prune_changes_job(pool: asyncpg.Pool, days: float) -> None:
    try:
        pruned = await changes.prune_changes(pool, days * 86400)
    except Exception:
        log.exception("pruning the change log failed")
        return
    log.info("pruned the change log", extra={"count": pruned})


async def sync_job(syncer: Syncer, watch: Watch) -> None:
    try:
        report = await syncer.sync(every=syncer.settings.sync_interval)
        await watch.verified.load(syncer.pool)  # our own round shows at once
        verdict = await watch.health.evaluate(syncer.pool)
        await watch.freshness.evaluate(syncer.pool, verdict)
    except asyncio.CancelledError:
        return
    except Exception:
        log.exception("sync round failed")
        return
    if report.synced or report.failed:
        log.info("sync round", extra={"report": report.as_json()})


async def watch_job(pool: asyncpg.Pool, watch: Watch, judge: bool) -> None:
    """Reload what other replicas' rounds verified; with `judge`, the webhooks and the
    freshness too."""
    try:
        await watch.verified.load(pool)
        if judge:
            verdict = await watch.health.evaluate(pool)
            await watch.freshness.evaluate(pool, verdict)
    except Exception:
        log.exception("reading sync watermarks failed")


def add_sync_jobs(
    scheduler: AsyncIOScheduler, syncer: Syncer, watch: Watch, settings: Settings
) -> None:
    """The sync round every JIRA_SYNC_INTERVAL (0: none), and the watermark and health reads."""
    every(scheduler, "verified", watch_job, VERIFIED_EVERY_SECONDS, syncer.pool, watch, False)
    every(scheduler, "health", watch_job, HEALTH_EVERY_SECONDS, syncer.pool, watch, True)
    if settings.sync_interval > 0:
        every(scheduler, "sync", sync_job, settings.sync_interval, syncer, watch)


def start_scheduler(poller: Poller, pool: asyncpg.Pool, settings: Settings) -> AsyncIOScheduler:
    """Start the jobs. The one rule: the scheduler always runs the housekeeping (pruning, forgetting
    unread keys, the watermark and health reads); an interval of 0 turns off only its own job
    (JIRA_POLL_INTERVAL the poll, JIRA_SYNC_INTERVAL the sync)."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    if settings.poll_interval > 0:
        every(scheduler, "poll", poll_job, settings.poll_interval, poller)
    days, letter_days = settings.webhook_dedupe_days, settings.dead_letter_retention_days
    hourly = PRUNE_EVERY_SECONDS
    every(scheduler, "prune", prune_job, hourly, pool, days, letter_days, at_once=False)
    every(scheduler, "forget", forget_job, hourly, poller, settings.track_reads_for, at_once=False)
    retention = settings.changes_retention_days
    every(scheduler, "prune_changes", prune_changes_job, hourly, pool, retention, at_once=False)
    if settings.webhook_manage:
        client = poller.refresher.client
        manage = registrar.manage_job
        seconds = registrar.EVERY_SECONDS
        every(scheduler, "webhook_filter", manage, seconds, pool, client, settings, at_once=False)
    scheduler.start()
    return scheduler


@contextlib.asynccontextmanager
async def running(
    parts: Parts,
    watch: Watch,
    settings: Settings,
    metrics: Metrics | None = None,
    memo: Memo | None = None,
) -> AsyncIterator[AsyncIOScheduler | None]:
    """`serve`'s scheduler over the parts (none without Jira: nothing to poll or sync), every
    job `start_scheduler` and `add_sync_jobs` name; shut down on exit, before the parts close."""
    if parts.poller is None or parts.client is None:
        yield None
        return
    scheduler = start_scheduler(parts.poller, parts.poller.pool, settings)
    syncer = Syncer(parts.poller.pool, parts.client, settings, metrics, memo)
    add_sync_jobs(scheduler, syncer, watch, settings)
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)


def every(
    scheduler: AsyncIOScheduler,
    name: str,
    job: Callable[..., Awaitable[None]],
    seconds: float,
    *args: Any,
    at_once: bool = True,
) -> None:
    """Run `job` every `seconds`, never two at once, missed runs coalesced; first run now."""
    first = {"next_run_time": datetime.now(UTC)} if at_once else {}
    scheduler.add_job(
        job,
        "interval",
        seconds=seconds,
        args=list(args),
        id=name,
        max_instances=1,
        coalesce=True,
        **first,
    )
