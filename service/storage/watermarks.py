"""SQL over sync_projects: per Jira project, the sync watermark, its lease and its failure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from service.model import Issue
from service.storage.pool import Executor


@dataclass(frozen=True, slots=True)
class Claim:
    """A project leased for one round, and the window that round must search."""

    project: str
    verified_at: datetime | None
    started: datetime
    taken_from: str | None = None  # the owner whose expired lease this claim took over


@dataclass(frozen=True, slots=True)
class Watermark:
    project: str
    verified_at: datetime | None
    covered_since: datetime | None
    error: str | None
    lease_owner: str | None
    failed_at: datetime | None = None
    overlap: float | None = None
    unknown_to_jira: bool = False


# The tracked projects get a row; a project no longer tracked loses its row (and, if
# tracked again, starts its coverage afresh), so no report counts it as stalled.
# jira_project(key) (migration 011) is the one definition of a key's project.
_FOLLOW_TRACKED = """
WITH projects AS (
    SELECT DISTINCT jira_project(key) AS project FROM tracked WHERE jira_project(key) IS NOT NULL
),
added AS (
    INSERT INTO sync_projects (project) SELECT project FROM projects ON CONFLICT DO NOTHING
)
DELETE FROM sync_projects
 WHERE project NOT IN (SELECT project FROM projects)
   AND (lease_until IS NULL OR lease_until < now())
"""

_CLAIM = """
WITH free AS (
    SELECT project, CASE WHEN lease_until < now() THEN lease_owner END AS previous
      FROM sync_projects
     WHERE project IN (SELECT DISTINCT jira_project(key) FROM tracked)
       AND (lease_until IS NULL OR lease_until < now())
       AND project <> ALL($3::text[])
       AND (verified_at IS NULL
            OR verified_at + make_interval(secs => coalesce(overlap, 0))
               < now() - make_interval(secs => $5))
       AND NOT (unknown_to_jira AND failed_at > now() - interval '1 hour')
     ORDER BY verified_at NULLS FIRST, project
     LIMIT $4
     FOR UPDATE SKIP LOCKED
)
UPDATE sync_projects s
   SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
  FROM free WHERE s.project = free.project
RETURNING s.project, s.verified_at, now() AS started, free.previous
"""

# Only after the round's writes committed: the window up to `verified` is read.
_ADVANCE = """
UPDATE sync_projects
   SET verified_at = $3, covered_since = coalesce(covered_since, $4), overlap = $5,
       error = NULL, failed_at = NULL, unknown_to_jira = false,
       lease_owner = NULL, lease_until = NULL
 WHERE project = ANY($2::text[]) AND lease_owner = $1
"""

# A failed project keeps its watermark: the next round searches the same window again.
_FAIL = """
UPDATE sync_projects s
   SET error = $3, failed_at = now(), unknown_to_jira = $4, lease_owner = NULL, lease_until = NULL
  FROM (SELECT project, error FROM sync_projects WHERE project = $2 FOR UPDATE) AS before
 WHERE s.project = $2 AND s.lease_owner = $1
RETURNING before.error
"""


async def claim(
    executor: Executor,
    owner: str,
    lease_seconds: float,
    limit: int,
    done: Sequence[str] = (),
    min_age: float = 0.0,
) -> list[Claim]:
    """Lease up to `limit` tracked projects that no replica holds, leaving out those `done`
    this round and those verified less than `min_age` seconds ago; oldest watermarks first."""
    await executor.execute(_FOLLOW_TRACKED)  # apart: a CTE's insert is invisible to the claim
    rows = await executor.fetch(_CLAIM, owner, lease_seconds, list(done), limit, min_age)
    return [
        Claim(row["project"], row["verified_at"], row["started"], row["previous"]) for row in rows
    ]


async def advance(
    executor: Executor,
    owner: str,
    projects: Sequence[str],
    verified: datetime,
    since: datetime,
    overlap: float,
) -> None:
    await executor.execute(_ADVANCE, owner, list(projects), verified, since, overlap)


async def fail(
    executor: Executor, owner: str, project: str, error: str, unknown: bool = False
) -> bool:
    """Record why a project failed (`unknown`: Jira does not know it); answer whether the
    reason is new (worth a log line)."""
    before = await executor.fetchval(_FAIL, owner, project, error, unknown)
    return bool(before != error)


async def renew(executor: Executor, owner: str, projects: Sequence[str], seconds: float) -> None:
    """Hold the lease on for a round that takes long, e.g. many pages after a long outage."""
    await executor.execute(
        "UPDATE sync_projects SET lease_until = now() + make_interval(secs => $3)"
        " WHERE project = ANY($2::text[]) AND lease_owner = $1",
        owner,
        list(projects),
        seconds,
    )


async def release(executor: Executor, owner: str, projects: Sequence[str]) -> None:
    await executor.execute(
        "UPDATE sync_projects SET lease_owner = NULL, lease_until = NULL"
        " WHERE project = ANY($2::text[]) AND lease_owner = $1",
        owner,
        list(projects),
    )


async def watermarks(executor: Executor) -> list[Watermark]:
    rows = await executor.fetch(
        "SELECT project, verified_at, covered_since, error, lease_owner, failed_at, overlap,"
        " unknown_to_jira FROM sync_projects ORDER BY project"
    )
    return [Watermark(**dict(row)) for row in rows]


@dataclass(frozen=True, slots=True)
class JiraClock:
    """Jira's clock and search index as last measured by any replica's sync."""

    skew: float  # seconds Jira's clock is ahead of PostgreSQL's; negative: behind
    skew_error: float
    skew_measured_at: datetime | None
    index_lag: float  # the largest lag observed within the last hour
    lag_measured_at: datetime | None


async def record_skew(executor: Executor, skew: float, error: float) -> None:
    await executor.execute(
        "UPDATE sync_clock SET skew = $1, skew_error = $2, skew_measured_at = now()", skew, error
    )


# A sample replaces a larger one only once that is an hour old: the estimate is the
# worst lag seen lately, not the last one.
_RECORD_LAG = """
UPDATE sync_clock
   SET index_lag = $1, lag_measured_at = now()
 WHERE $1 >= index_lag OR lag_measured_at IS NULL OR lag_measured_at < now() - interval '1 hour'
"""


async def record_lag(executor: Executor, seconds: float) -> None:
    await executor.execute(_RECORD_LAG, seconds)


async def jira_clock(executor: Executor) -> JiraClock:
    row = await executor.fetchrow(
        "SELECT skew, skew_error, skew_measured_at,"
        " CASE WHEN lag_measured_at > now() - interval '1 hour' THEN index_lag ELSE 0 END"
        " AS index_lag, lag_measured_at FROM sync_clock"
    )
    if row is None:
        return JiraClock(0.0, 0.0, None, 0.0, None)
    return JiraClock(**dict(row))


@dataclass(frozen=True, slots=True)
class Known:
    """A found issue the cache holds (its version, and who delivered it) or only tracks."""

    updated: datetime | None
    changed_by: str | None


# A tracked project holds issues nobody asked for: those are not worth keeping.
_KNOWN = """
SELECT t.id, i.jira_updated_at, i.changed_by
  FROM unnest($1::bigint[], $2::text[]) AS t(id, key)
  LEFT JOIN issues i ON i.id = t.id
 WHERE i.id IS NOT NULL OR EXISTS (SELECT 1 FROM tracked k WHERE k.key = t.key)
"""


async def known_versions(executor: Executor, page: Sequence[Issue]) -> dict[int, Known]:
    """The page's issues the cache holds or tracks, by id, with the version it holds."""
    rows = await executor.fetch(_KNOWN, [issue.id for issue in page], [issue.key for issue in page])
    return {row["id"]: Known(row["jira_updated_at"], row["changed_by"]) for row in rows}


async def now(executor: Executor) -> datetime:
    """PostgreSQL's clock, which every watermark is in."""
    moment: datetime = await executor.fetchval("SELECT now()")
    return moment
