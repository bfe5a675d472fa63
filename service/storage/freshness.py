"""SQL behind the freshness reports: who saw the last hour's changes first, and the sync's age."""

from __future__ import annotations

import asyncpg

from service.storage.pool import Executor

# A sequential scan of issues changed in the last hour; run every half minute, not per request.
_WEBHOOK_HEALTH = """
WITH recent AS (
    SELECT jira_project(key) AS project, changed_by, jira_updated_at,
           changed_by IN ('sync', 'poll')
           AND changed_at > jira_updated_at + make_interval(secs => $1) AS missed
      FROM issues WHERE changed_at > now() - interval '1 hour'
),
projects AS (
    SELECT project FROM recent GROUP BY project
    HAVING max(jira_updated_at) FILTER (WHERE missed) > coalesce(
        max(jira_updated_at) FILTER (WHERE changed_by = 'webhook'), '-infinity')
)
SELECT (SELECT max(received_at) FROM webhook_deliveries) AS last_delivery,
       (SELECT max(jira_updated_at) FROM recent WHERE missed) AS last_missed,
       (SELECT count(*) FROM recent WHERE missed) AS missed,
       (SELECT coalesce(array_agg(project ORDER BY project), '{}') FROM projects) AS projects,
       (SELECT coalesce(jsonb_object_agg(changed_by, n), '{}') FROM
         (SELECT changed_by, count(*) AS n FROM recent GROUP BY changed_by) AS c)::text AS counts,
       now() AS now
"""


async def webhook_health(executor: Executor, grace: float) -> asyncpg.Record:
    """One row: the last delivery, the last hour's missed webhooks, projects, counts, now."""
    (row,) = await executor.fetch(_WEBHOOK_HEALTH, grace)  # aggregates: always one row
    return row


async def oldest_verified_seconds(executor: Executor) -> float | None:
    """Seconds since the least recently verified project was verified; None if none was."""
    seconds = await executor.fetchval(
        "SELECT extract(epoch FROM now() - min(verified_at)) FROM sync_projects"
    )
    return None if seconds is None else float(seconds)
