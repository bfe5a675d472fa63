"""The one factory of the Jira session, client, refresher, poller and reader, for every caller;
`serve`'s lifespan starts the scheduler over them (`schedule.running`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from service.config import Settings
from service.jira.client import JiraClient, open_session
from service.metrics import Metrics
from service.sync.freshness import FreshnessWatch
from service.sync.health import WebhookHealth
from service.sync.memo import Memo
from service.sync.poller import Poller
from service.sync.reads import Reader
from service.sync.refresh import Refresher
from service.sync.verified import Verified


@dataclass(frozen=True, slots=True)
class Watch:
    """What serve's scheduler keeps current for the reads and /healthz."""

    verified: Verified  # each project's last sync, for the issues' age
    health: WebhookHealth  # are webhooks delivering?
    freshness: FreshnessWatch  # the sync's verdict: stalled, failing, skewed, lagging...


@dataclass(frozen=True, slots=True)
class Parts:
    """What reads from Jira; all None but the reader when Jira is not configured."""

    reader: Reader
    client: JiraClient | None = None
    refresher: Refresher | None = None
    poller: Poller | None = None


@contextlib.asynccontextmanager
async def jira_parts(
    settings: Settings,
    pool: asyncpg.Pool,
    metrics: Metrics | None = None,
    memo: Memo | None = None,
) -> AsyncIterator[Parts]:
    """Build the parts, and on exit drain background reads, stop the poller, close the session."""
    if settings.jira is None:
        yield Parts(Reader(pool, memo, None, settings))
        return
    async with open_session(settings.jira) as session:
        client = JiraClient(session, settings.jira)
        if metrics is not None:
            metrics.watch_jira(client)
        refresher = Refresher(pool, client, settings.cache_ttl, metrics, memo)
        poller = Poller(pool, refresher, settings)
        reader = Reader(pool, memo, refresher, settings)
        try:
            yield Parts(reader, client, refresher, poller)
        finally:
            # Both bounded: background reads and the poller's batch end together.
            await asyncio.gather(reader.close(), poller.stop())
