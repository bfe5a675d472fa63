"""SQL over sync_projects: per Jira project, the sync watermark, its lease and its failure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from service.storage.pool import Executor


@dataclass(frozen=True, slots=True)
class Claim:
    """A project leased for one round, and the window that round must search."""

    project: str
    verified_at: datetime | None
    started: datetime


@dataclass(frozen=True, slots=True)
class Watermark:
    project: str
    verified_at: datetime | None
    covered_since: datetime | None
    error: str | None
    lease_owner: str | None


# The project of a key is what precedes its dash ("PRJ" in "PRJ-7"; a project key has none).
# A tracked numeric id names no project. split_part, not a regular expression: 0.17 s against
# 2.1 s over 1,000,000 tracked keys (measured).
_ADD = """
INSERT INTO sync_projects (project)
SELECT DISTINCT split_part(key, '-', 1) FROM tracked WHERE key LIKE '%-%'
ON CONFLICT DO NOTHING
"""

_CLAIM = """
WITH free AS (
    SELECT project FROM sync_projects
     WHERE project IN (SELECT DISTINCT split_part(key, '-', 1) FROM tracked WHERE key LIKE '%-%')
       AND (lease_until IS NULL OR lease_until < now())
       AND project <> ALL($3::text[])
       AND (verified_at IS NULL OR verified_at < now() - make_interval(secs => $5))
     ORDER BY verified_at NULLS FIRST, project
     LIMIT $4
     FOR UPDATE SKIP LOCKED
)
UPDATE sync_projects s
   SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
  FROM free WHERE s.project = free.project
RETURNING s.project, s.verified_at, now() AS started
"""

# Only after the round's writes committed: the window up to `verified` is read.
_ADVANCE = """
UPDATE sync_projects
   SET verified_at = $3, covered_since = coalesce(covered_since, $4),
       error = NULL, failed_at = NULL, lease_owner = NULL, lease_until = NULL
 WHERE project = ANY($2::text[]) AND lease_owner = $1
"""

# A failed project keeps its watermark: the next round searches the same window again.
_FAIL = """
UPDATE sync_projects s
   SET error = $3, failed_at = now(), lease_owner = NULL, lease_until = NULL
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
    await executor.execute(_ADD)  # apart: a CTE's insert is invisible to its own statement
    rows = await executor.fetch(_CLAIM, owner, lease_seconds, list(done), limit, min_age)
    return [Claim(row["project"], row["verified_at"], row["started"]) for row in rows]


async def advance(
    executor: Executor, owner: str, projects: Sequence[str], verified: datetime, since: datetime
) -> None:
    await executor.execute(_ADVANCE, owner, list(projects), verified, since)


async def fail(executor: Executor, owner: str, project: str, error: str) -> bool:
    """Record why a project failed; answer whether the reason is new (worth a log line)."""
    before = await executor.fetchval(_FAIL, owner, project, error)
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
        "SELECT project, verified_at, covered_since, error, lease_owner"
        " FROM sync_projects ORDER BY project"
    )
    return [Watermark(**dict(row)) for row in rows]


# Tracked keys whose issue is current as of its project's last sync (read since coverage
# began, read by us within `recheck`, answered ok) wait for verified_at + ttl, unread.
_RELEASE_VERIFIED = """
UPDATE tracked t
   SET lease_owner = NULL, lease_until = NULL,
       next_due_at = s.verified_at + make_interval(secs => $3)
  FROM issue_keys k, issues i, sync_projects s
 WHERE t.key = ANY($2::text[]) AND t.lease_owner = $1
   AND k.key = t.key AND i.id = k.issue_id AND i.state = 'ok'
   AND s.project = split_part(i.key, '-', 1)
   AND i.fetched_at >= s.covered_since
   AND i.fetched_at > now() - make_interval(secs => $4)
   AND s.verified_at > now() - make_interval(secs => $3)
RETURNING t.key
"""


async def release_verified(
    executor: Executor, owner: str, keys: Sequence[str], ttl: float, recheck: float
) -> set[str]:
    """Release the claimed keys a sync has verified within the TTL; answer which."""
    rows = await executor.fetch(_RELEASE_VERIFIED, owner, list(keys), ttl, recheck)
    return {row["key"] for row in rows}
