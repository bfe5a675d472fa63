"""The in-process APScheduler: the poll cycle, and pruning delivery records and unread keys."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service.config import Settings
from service.shapes import shape_report
from service.storage import changes, tracking, webhooks
from service.sync import registrar
from service.sync.catchup import Syncer
from service.sync.health import WebhookHealth
from service.sync.poller import Poller
from service.sync.verified import Verified

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
        pruned = await webhooks.prune_deliveries(pool, days)
        letters = await webhooks.prune_dead_letters(pool, letter_days)
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


async def sync_job(syncer: Syncer, verified: Verified, health: WebhookHealth) -> None:
    try:
        report = await syncer.sync(every=syncer.settings.sync_interval)
        await verified.load(syncer.pool)  # our own round shows at once
        await health.evaluate(syncer.pool)
    except asyncio.CancelledError:
        return
    except Exception:
        log.exception("sync round failed")
        return
    if report.synced or report.failed:
        log.info("sync round", extra={"report": report.as_json()})


async def watch_job(pool: asyncpg.Pool, verified: Verified, health: WebhookHealth | None) -> None:
    """Reload what other replicas' rounds verified; judge the webhooks now and then."""
    try:
        await verified.load(pool)
        if health is not None:
            await health.evaluate(pool)
    except Exception:
        log.exception("reading sync watermarks failed")


def add_sync_jobs(
    scheduler: AsyncIOScheduler,
    syncer: Syncer,
    verified: Verified,
    health: WebhookHealth,
    settings: Settings,
) -> None:
    """The sync round every JIRA_SYNC_INTERVAL (0: none), and the watermark and health reads."""
    jobs: list[tuple[str, Any, float, list[Any]]] = [
        ("verified", watch_job, VERIFIED_EVERY_SECONDS, [syncer.pool, verified, None]),
        ("health", watch_job, HEALTH_EVERY_SECONDS, [syncer.pool, verified, health]),
    ]
    if settings.sync_interval > 0:
        jobs.append(("sync", sync_job, settings.sync_interval, [syncer, verified, health]))
    for name, job, seconds, args in jobs:
        scheduler.add_job(
            job,
            "interval",
            seconds=seconds,
            args=args,
            id=name,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )


def start_scheduler(poller: Poller, pool: asyncpg.Pool, settings: Settings) -> AsyncIOScheduler:
    """Start the jobs; with JIRA_POLL_INTERVAL=0 only the pruning runs."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    if settings.poll_interval > 0:
        scheduler.add_job(
            poll_job,
            "interval",
            seconds=settings.poll_interval,
            args=[poller],
            id="poll",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
    scheduler.add_job(
        prune_job,
        "interval",
        seconds=PRUNE_EVERY_SECONDS,
        args=[pool, settings.webhook_dedupe_days, settings.dead_letter_retention_days],
        id="prune",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        forget_job,
        "interval",
        seconds=PRUNE_EVERY_SECONDS,
        args=[poller, settings.track_reads_for],
        id="forget",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        prune_changes_job,
        "interval",
        seconds=PRUNE_EVERY_SECONDS,
        args=[pool, settings.changes_retention_days],
        id="prune_changes",
        max_instances=1,
        coalesce=True,
    )
    if settings.webhook_manage:
        registrar.add_job(scheduler, pool, poller.refresher.client, settings)
    scheduler.start()
    return scheduler
