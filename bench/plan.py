"""How much the suite measures: the full run, or the smaller --quick one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    issues: int  # the world: tracked, cached and in the simulator
    origin_sample: int  # issues the sequential origin refresh is timed over
    step_seconds: float  # each webhook rate step, and each read run
    webhook_rates: tuple[int, ...]
    freshness_changes: int
    scales: tuple[int, ...]
    rss_issues: int
    claims: int  # claims of 1,000 timed per scale (the median is reported)
    upserts: int  # upserts of 10,000 timed per scale (the median is reported)
    quiet_limit: float  # seconds a load run waits for the rest of the machine to go quiet
    retry_crowded: bool  # runs with a target go once more when other work crowded them
    feed_seconds: float  # of webhooks at 200/s, each timed to its SSE event and receipt
    streams: int  # SSE streams open in the streams scenario
    # The sync scenario, on a time scale compressed 60 times (a TTL of 60 s stands for 1 hour).
    sync_issues: int  # tracked, cached and in each simulator, spread over 20 projects
    sync_change_every: float  # seconds between changes in Jira
    sync_measure: float  # seconds over which requests and staleness are measured

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


FULL = Plan(
    quick=False,
    issues=10_000,
    origin_sample=300,
    step_seconds=5.0,
    webhook_rates=(250, 500, 1000, 2000),
    freshness_changes=300,
    scales=(10_000, 100_000, 300_000, 1_000_000),
    rss_issues=100_000,
    claims=5,
    upserts=3,
    quiet_limit=5.0,
    retry_crowded=True,
    feed_seconds=10.0,
    streams=1000,
    sync_issues=100_000,
    sync_change_every=0.01,
    sync_measure=60.0,
)

QUICK = Plan(
    quick=True,
    issues=10_000,
    origin_sample=50,
    step_seconds=2.0,
    webhook_rates=(250, 500, 1000, 2000),
    freshness_changes=50,
    scales=(10_000, 100_000),
    rss_issues=100_000,
    claims=3,
    upserts=1,
    quiet_limit=1.0,
    retry_crowded=False,
    feed_seconds=3.0,
    streams=200,
    sync_issues=10_000,
    sync_change_every=0.01,
    sync_measure=30.0,
)
