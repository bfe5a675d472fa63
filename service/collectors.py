"""Collectors read at scrape time: the webhook health, the Jira client, the memo, the feed.

Each reads the plain counters of an object that knows nothing of Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service.sync.freshness import State as FreshnessState
from service.sync.health import State as WebhookState

if TYPE_CHECKING:  # read only: importing them here would make metrics import the sync
    from service.jira.client import JiraClient
    from service.sync.feed import Feed
    from service.sync.freshness import FreshnessWatch
    from service.sync.health import WebhookHealth
    from service.sync.hub import Hub
    from service.sync.memo import Memo

_BREAKER_STATES = ("closed", "open", "half_open")


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
        for name in get_args(WebhookState):
            state.add_metric([name], 1.0 if verdict.state == name else 0.0)
        yield state
        yield GaugeMetricFamily(
            "jsc_webhook_uncovered_projects",
            "Tracked projects outside our webhook's filter (their changes wait for the sync)",
            float(len(verdict.uncovered_projects)),
        )


class FreshnessCollector(Collector):
    """The freshness verdict (/healthz's `freshness`): its state, and whether the sync stalled."""

    def __init__(self, watch: FreshnessWatch) -> None:
        self.watch = watch

    def collect(self) -> Iterator[GaugeMetricFamily]:
        verdict = self.watch.verdict
        state = GaugeMetricFamily(
            "jsc_freshness_state", "1 for the freshness verdict's state", labels=["state"]
        )
        for name in get_args(FreshnessState):
            state.add_metric([name], 1.0 if verdict.state == name else 0.0)
        yield state
        yield GaugeMetricFamily(
            "jsc_sync_stalled",
            "1 while no sync round succeeded for 3 intervals (freshness state stalled)",
            1.0 if verdict.state == "stalled" else 0.0,
        )


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


class HubCollector(Collector):
    """The stream hub's reads of the log (one per wake, whatever the streams) and drops."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        hub = self.hub
        yield CounterMetricFamily(
            "jsc_change_hub_reads", "Reads of the change log for every stream", hub.reads
        )
        yield CounterMetricFamily(
            "jsc_change_streams_dropped", "Streams dropped for falling behind", hub.dropped
        )
        yield GaugeMetricFamily(
            "jsc_change_hub_taps", "Streams reading from the hub's pages", len(hub.taps)
        )
