"""The in-process APScheduler: the poll cycle and the pruning of delivery records."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from service.config import Settings
from service.storage import changes
from service.storage import webhooks as deliveries
from service.sync.poller import Poller

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600


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
        log.info("poll run", extra={"report": report.as_json()})


async def prune_job(pool: asyncpg.Pool, days: float) -> None:
    try:
        pruned = await deliveries.prune_deliveries(pool, days)
    except Exception:
        log.exception("pruning webhook deliveries failed")
        return
    log.info("pruned webhook deliveries", extra={"count": pruned})


async def prune_changes_job(pool: asyncpg.Pool, days: float) -> None:
    try:
        pruned = await changes.prune_changes(pool, days * 86400)
    except Exception:
        log.exception("pruning the change log failed")
        return
    log.info("pruned the change log", extra={"count": pruned})


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
        args=[pool, settings.webhook_dedupe_days],
        id="prune",
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
    scheduler.start()
    return scheduler
