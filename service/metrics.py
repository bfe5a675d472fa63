"""Prometheus metrics: one registry per app, counted where things happen, read at scrape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from service.collectors import (
    FeedCollector,
    FreshnessCollector,
    HealthCollector,
    HubCollector,
    JiraCollector,
    MemoCollector,
)
from service.storage import gauges, watermarks
from service.storage.pool import UNREACHABLE, DatabaseUnavailableError

if TYPE_CHECKING:  # the collectors read them; importing them would make metrics import sync
    from service.jira.client import JiraClient
    from service.sync.feed import Feed
    from service.sync.freshness import FreshnessWatch
    from service.sync.health import WebhookHealth
    from service.sync.hub import Hub
    from service.sync.memo import Memo

# The process (CPU, memory, open files), the interpreter and its garbage collector, as
# prometheus_client exports them by default.
_RUNTIME = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)
_DATABASE_DOWN: tuple[type[BaseException], ...] = (*UNREACHABLE, DatabaseUnavailableError)

# Aggregates over the tracked set and the cache: 110 ms at 500,000 rows (measured), so
# they are read at most once per SNAPSHOT_SECONDS, by one scrape at a time.
SNAPSHOT_SECONDS = 5.0


class Metrics:
    """Every metric of the service, registered in its own registry (one per app)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._sampling = asyncio.Lock()
        self._sampled_at: float | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        for collector in _RUNTIME:
            r.register(collector)
        self.webhooks = Counter(
            "jsc_webhooks",
            "Webhook deliveries by event and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.signature_failures = Counter(
            "jsc_webhook_signature_failures",
            "Webhooks refused for their signature",
            ["reason"],
            registry=r,
        )
        self.poll_runs = Counter("jsc_poll_runs", "Poll runs by result", ["result"], registry=r)
        self.poll_seconds = Histogram(
            "jsc_poll_run_seconds",
            "Duration of poll runs",
            registry=r,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.refreshed = Counter(
            "jsc_issues_refreshed",
            "Keys read from Jira by source and outcome",
            ["source", "outcome"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "jsc_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.tracked = Gauge("jsc_tracked_issues", "Keys the poller keeps fresh", registry=r)
        self.due = Gauge("jsc_due_issues", "Tracked keys due for a read now", registry=r)
        self.stale = Gauge("jsc_stale_issues", "Cached issues older than the TTL", registry=r)
        self.letters_held = Gauge(
            "jsc_dead_letters_held", "Dead letters kept (pruned after their retention)", registry=r
        )
        self.oldest = Gauge(
            "jsc_cache_oldest_age_seconds", "Age of the oldest cached issue", registry=r
        )
        self.pool_in_use = Gauge("jsc_db_pool_in_use", "Database connections in use", registry=r)
        self.pool_size = Gauge("jsc_db_pool_size", "Database connections open", registry=r)
        self.dead_letters = Counter(
            "jsc_dead_letters", "Webhook deliveries kept as dead letters", registry=r
        )
        self.change_streams = Gauge("jsc_change_streams", "Open change streams (SSE)", registry=r)
        self.change_events = Counter(
            "jsc_change_stream_events", "Change entries sent on streams", registry=r
        )
        self.streams_refused = Counter(
            "jsc_change_streams_refused", "Streams refused at STREAM_LIMIT", registry=r
        )
        self.abandoned = Counter(
            "jsc_http_abandoned",
            "Requests whose client went away or was too slow, by what was left",
            ["reason"],
            registry=r,
        )
        self.sync_rounds = Counter(
            "jsc_sync_rounds", "Changed-since sync rounds by result", ["result"], registry=r
        )
        self.sync_changes = Counter(
            "jsc_sync_changes", "Changes that sync rounds found first", registry=r
        )
        self.sync_pages = Counter("jsc_sync_pages", "Search pages read by sync rounds", registry=r)
        self.sync_seconds = Histogram(
            "jsc_sync_round_seconds",
            "Duration of sync rounds",
            registry=r,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.sync_lag = Gauge(
            "jsc_sync_watermark_lag_seconds",
            "Seconds since each project was last verified by a sync (-1: never)",
            ["project"],
            registry=r,
        )
        self.sync_failing = Gauge(
            "jsc_sync_project_failing", "1 while a project's sync fails", ["project"], registry=r
        )
        self.jira_skew = Gauge(
            "jsc_jira_clock_skew_seconds",
            "Seconds Jira's clock is ahead of ours (negative: behind), measured each sync round",
            registry=r,
        )
        self.index_lag = Gauge(
            "jsc_jira_index_lag_seconds",
            "Largest search index lag the sync observed in the last hour",
            registry=r,
        )
        self.deliveries = Counter(
            "jsc_subscription_deliveries",
            "Delivery attempts to subscribers by outcome",
            ["outcome"],
            registry=r,
        )
        self.subscriptions = Gauge(
            "jsc_subscriptions", "Subscriptions by state", ["state"], registry=r
        )
        self.subscription_failing = Gauge(
            "jsc_subscription_failing_seconds",
            "How long the longest-failing active subscription has failed (0: none)",
            registry=r,
        )
        self.database_up = Gauge(
            "jsc_database_up", "1 when the last scrape could read PostgreSQL", registry=r
        )

    def watch_jira(self, client: JiraClient) -> None:
        self.registry.register(JiraCollector(client))

    def watch_memo(self, memo: Memo) -> None:
        self.registry.register(MemoCollector(memo))

    def watch_feed(self, feed: Feed) -> None:
        self.registry.register(FeedCollector(feed))

    def watch_hub(self, hub: Hub) -> None:
        self.registry.register(HubCollector(hub))

    async def sample(self, pool: asyncpg.Pool, ttl: float) -> None:
        """Read the gauges that live in PostgreSQL and the pool, just before a scrape."""
        self.pool_size.set(pool.get_size())
        self.pool_in_use.set(pool.get_size() - pool.get_idle_size())
        async with self._sampling:
            at = self._sampled_at
            if at is not None and self.clock() - at < SNAPSHOT_SECONDS:
                return
            try:
                await self._sample_cache(pool, ttl)
            except _DATABASE_DOWN:
                self.database_up.set(0)  # the other gauges keep their last values
                return
            self.database_up.set(1)
            self._sampled_at = self.clock()

    async def _sample_cache(self, pool: asyncpg.Pool, ttl: float) -> None:
        found = await gauges.cache_gauges(pool, ttl)
        self.tracked.set(found.tracked)
        self.due.set(found.due)
        self.stale.set(found.stale)
        self.oldest.set(found.oldest)
        self.letters_held.set(found.dead_letters)
        self.subscriptions.labels("active").set(found.active)
        self.subscriptions.labels("paused").set(found.paused)
        self.subscription_failing.set(found.failing)
        await self.sample_sync(pool)

    def watch_health(self, health: WebhookHealth) -> None:
        self.registry.register(HealthCollector(health))

    def watch_freshness(self, watch: FreshnessWatch) -> None:
        self.registry.register(FreshnessCollector(watch))

    async def sample_sync(self, pool: asyncpg.Pool) -> None:
        marks = await gauges.sync_gauges(pool)
        self.sync_lag.clear()
        self.sync_failing.clear()
        for mark in marks:
            self.sync_lag.labels(mark.project).set(mark.lag)
            self.sync_failing.labels(mark.project).set(1.0 if mark.failing else 0.0)
        clock = await watermarks.jira_clock(pool)
        self.jira_skew.set(clock.skew)
        self.index_lag.set(clock.index_lag)
