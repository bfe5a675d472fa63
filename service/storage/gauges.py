"""Aggregates over the cache, the tracked set, dead letters, subscriptions and the sync's
watermarks: what /metrics shows of PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

from service.storage.pool import Executor

_CACHE = """
SELECT (SELECT count(*) FROM tracked) AS tracked,
       (SELECT count(*) FROM tracked WHERE next_due_at <= now()) AS due,
       (SELECT count(*) FROM issues
         WHERE fetched_at < now() - make_interval(secs => $1)) AS stale,
       (SELECT coalesce(extract(epoch FROM now() - min(fetched_at)), 0)
          FROM issues WHERE state = 'ok') AS oldest,
       (SELECT count(*) FROM dead_letters) AS dead_letters,
       (SELECT count(*) FROM subscriptions WHERE paused_at IS NULL) AS active,
       (SELECT count(*) FROM subscriptions WHERE paused_at IS NOT NULL) AS paused,
       (SELECT coalesce(extract(epoch FROM now() - min(failing_since)), 0)
          FROM subscriptions WHERE paused_at IS NULL) AS failing
"""

_SYNC = """
SELECT project, error IS NOT NULL AS failing,
       coalesce(extract(epoch FROM now() - verified_at), -1) AS lag
  FROM sync_projects
"""


@dataclass(frozen=True, slots=True)
class CacheGauges:
    tracked: int
    due: int
    stale: int  # cached issues older than the TTL
    oldest: float  # seconds since the oldest cached issue was read
    dead_letters: int
    active: int  # subscriptions
    paused: int
    failing: float  # seconds the longest-failing active subscription has failed; 0: none


@dataclass(frozen=True, slots=True)
class SyncGauge:
    project: str
    failing: bool
    lag: float  # seconds since the project was last verified; -1: never


async def cache_gauges(db: Executor, ttl: float) -> CacheGauges:
    row = await db.fetchrow(_CACHE, ttl)
    if row is None:  # an aggregate always answers one row
        raise LookupError("the cache gauges query answered no row")
    return CacheGauges(
        row["tracked"],
        row["due"],
        row["stale"],
        float(row["oldest"]),
        row["dead_letters"],
        row["active"],
        row["paused"],
        float(row["failing"]),
    )


async def sync_gauges(db: Executor) -> list[SyncGauge]:
    rows = await db.fetch(_SYNC)
    return [SyncGauge(row["project"], row["failing"], float(row["lag"])) for row in rows]
