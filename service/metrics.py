"""Prometheus metrics: one registry per app, counted where things happen, read at scrape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from service.jira.client import JiraClient
from service.storage import watermarks
from service.sync.feed import Feed
from service.sync.health import WebhookHealth
from service.sync.memo import Memo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BREAKER_STATES = ("closed", "open", "half_open")

# Aggregates over the tracked set and the cache: 110 ms at 500,000 rows (measured), so
# they are read at most once per SNAPSHOT_SECONDS, by one scrape at a time.
SNAPSHOT_SECONDS = 5.0
_CACHE_QUERY = """
SELECT (SELECT count(*) FROM tracked) AS tracked,
       (SELECT count(*) FROM tracked WHERE next_due_at <= now()) AS due,
       (SELECT count(*) FROM issues
         WHERE fetched_at < now() - make_interval(secs => $1)) AS stale,
       (SELECT coalesce(extract(epoch FROM now() - min(fetched_at)), 0)
          FROM issues WHERE state = 'ok') AS oldest,
       (SELECT count(*) FROM dead_letters) AS dead_letters,
       (SELECT count(*) FROM subscriptions WHERE paused_at IS NULL) AS active,
       (SELECT count(*) FROM subscriptions WHERE paused_at IS NOT NULL) AS paused
"""

_SYNC_QUERY = """
SELECT project, error IS NOT NULL AS failing,
       coalesce(extract(epoch FROM now() - verified_at), -1) AS lag
  FROM sync_projects
"""


class Metrics:
    """Every metric of the service, registered in its own registry (one per app)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._sampling = asyncio.Lock()
        self._sampled_at: float | None = None
        self.registry = CollectorRegistry()
        r = self.registry
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

    def watch_jira(self, client: JiraClient) -> None:
        self.registry.register(JiraCollector(client))

    def watch_memo(self, memo: Memo) -> None:
        self.registry.register(MemoCollector(memo))

    def watch_feed(self, feed: Feed) -> None:
        self.registry.register(FeedCollector(feed))

    async def sample(self, pool: asyncpg.Pool, ttl: float) -> None:
        """Read the gauges that live in PostgreSQL and the pool, just before a scrape."""
        async with self._sampling:
            at = self._sampled_at
            if at is None or self.clock() - at >= SNAPSHOT_SECONDS:
                await self._sample_cache(pool, ttl)
                self._sampled_at = self.clock()
        self.pool_size.set(pool.get_size())
        self.pool_in_use.set(pool.get_size() - pool.get_idle_size())

    async def _sample_cache(self, pool: asyncpg.Pool, ttl: float) -> None:
        row = await pool.fetchrow(_CACHE_QUERY, ttl)
        if row is not None:
            self.tracked.set(row["tracked"])
            self.due.set(row["due"])
            self.stale.set(row["stale"])
            self.oldest.set(float(row["oldest"]))
            self.letters_held.set(row["dead_letters"])
            self.subscriptions.labels("active").set(row["active"])
            self.subscriptions.labels("paused").set(row["paused"])
        await self.sample_sync(pool)

    def watch_health(self, health: WebhookHealth) -> None:
        self.registry.register(HealthCollector(health))

    async def sample_sync(self, pool: asyncpg.Pool) -> None:
        self.sync_lag.clear()
        self.sync_failing.clear()
        for row in await pool.fetch(_SYNC_QUERY):
            self.sync_lag.labels(row["project"]).set(float(row["lag"]))
            self.sync_failing.labels(row["project"]).set(1.0 if row["failing"] else 0.0)
        clock = await watermarks.jira_clock(pool)
        self.jira_skew.set(clock.skew)
        self.index_lag.set(clock.index_lag)


class HealthCollector(Collector):
    """Changes of the last hour by who saw them first, and the missed webhooks among them."""

    def __init__(self, health: WebhookHealth) -> None:
        self.health = health

    def collect(self) -> Iterator[GaugeMetricFamily]:
        verdict = self.health.verdict
        changes = GaugeMetricFamily(
            "jsc_changes_last_hour", "Changes by who saw them first", labels=["first_seen_by"]
        )
        for source in ("webhook", "sync", "poll", "refresh"):
            changes.add_metric([source], float(verdict.changes.get(source, 0)))
        yield changes
        yield GaugeMetricFamily(
            "jsc_webhooks_missed_last_hour",
            "Changes found by sync or poll later than WEBHOOK_GRACE",
            float(verdict.missed),
        )
        state = GaugeMetricFamily(
            "jsc_webhooks_state", "1 for the webhook health", labels=["state"]
        )
        for name in ("ok", "missing", "silent", "unconfigured", "unknown"):
            state.add_metric([name], 1.0 if verdict.state == name else 0.0)
        yield state


class JiraCollector(Collector):
    """The Jira client's own counters, read at scrape time so the client stays plain."""

    def __init__(self, client: JiraClient) -> None:
        self.client = client

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.client.stats
        requests = CounterMetricFamily(
            "jsc_jira_requests",
            "Requests to Jira by endpoint and status",
            labels=["endpoint", "status"],
        )
        for (route, status), count in sorted(stats.requests.items()):
            requests.add_metric([route, status], count)
        yield requests
        yield CounterMetricFamily(
            "jsc_jira_rate_limited", "429 answers from Jira", stats.rate_limited
        )
        yield CounterMetricFamily(
            "jsc_jira_rate_limit_wait_seconds",
            "Time spent waiting on Jira's limits",
            stats.rate_limit_wait,
        )
        breaker = GaugeMetricFamily(
            "jsc_jira_circuit_state", "1 for the circuit breaker's current state", labels=["state"]
        )
        for state in _BREAKER_STATES:
            breaker.add_metric([state], 1.0 if self.client.breaker_state == state else 0.0)
        yield breaker


class MemoCollector(Collector):
    """The memo's hits, misses, size and whether its change listener is connected."""

    def __init__(self, memo: Memo) -> None:
        self.memo = memo

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        memo = self.memo
        yield CounterMetricFamily("jsc_memo_hits", "Reads answered from memory", memo.hits)
        yield CounterMetricFamily("jsc_memo_misses", "Reads that went to PostgreSQL", memo.misses)
        yield GaugeMetricFamily("jsc_memo_entries", "Issues held in memory", len(memo))
        yield GaugeMetricFamily(
            "jsc_memo_live", "1 while the change listener is connected", float(memo.live)
        )


class FeedCollector(Collector):
    """The change feed's notifications heard, wakes of its readers, and its listener's state."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        feed = self.feed
        yield CounterMetricFamily(
            "jsc_change_feed_notifications", "Change notifications heard", feed.notifications
        )
        yield CounterMetricFamily("jsc_change_feed_wakes", "Wakes of waiting readers", feed.wakes)
        yield GaugeMetricFamily(
            "jsc_change_feed_live", "1 while the feed's listener is connected", float(feed.live)
        )


async def get_metrics(request: Request) -> Response:
    metrics: Metrics = request.state.metrics
    await metrics.sample(request.state.pool, request.state.settings.cache_ttl)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE)
