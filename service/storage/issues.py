"""SQL over issues and their keys: the one write-forward upsert and the reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

import asyncpg

from service.model import Assignee, CachedIssue, Issue, Source, Status
from service.storage.pool import Executor

Outcome = Literal["created", "updated", "unchanged", "stale"]

# The write rule, over a CTE `incoming` of issues (one row per id, with the `source` that
# read them): every write of Jira's issue data goes through it, the bulk upsert below and the
# webhooks' group commit (storage/inbox.py). The WHERE keeps the write forward: an older
# Jira `updated` never replaces a newer one, and an update older than a deletion never brings
# the issue back. RETURNING reads each row's `previous` time by index from the snapshot
# before the write, which tells created, updated and unchanged apart; an issue not returned
# was stale. Every step is a per-row index lookup, never a join of two CTEs: a cached generic
# plan that misjudges the array sizes then stays linear (a join plan went quadratic, 0.2 s
# to 6 s for 10,000 rows, measured).
WRITE_FORWARD = """
written AS (
    INSERT INTO issues AS i (
        id, key, status_id, status_name, status_category, summary,
        assignee_account_id, assignee_display_name, priority, jira_updated_at,
        fetched_at, source, state, error, failures, deleted_at, changed_by, changed_at)
    SELECT id, key, status_id, status_name, status_category, summary,
           assignee_account_id, assignee_display_name, priority, jira_updated_at,
           now(), source, 'ok', NULL, 0, NULL, source, now()
      FROM incoming
    ON CONFLICT (id) DO UPDATE SET
        key = excluded.key, status_id = excluded.status_id,
        status_name = excluded.status_name, status_category = excluded.status_category,
        summary = excluded.summary, assignee_account_id = excluded.assignee_account_id,
        assignee_display_name = excluded.assignee_display_name,
        priority = excluded.priority, jira_updated_at = excluded.jira_updated_at,
        fetched_at = now(), state = 'ok', error = NULL,
        -- who delivered the version served: a re-read that changes nothing keeps it
        source = CASE WHEN (i.jira_updated_at, i.key, i.status_id, i.status_name,
                            i.status_category, i.summary, i.assignee_account_id,
                            i.assignee_display_name, i.priority, served_state(i.state))
                           IS DISTINCT FROM
                           (excluded.jira_updated_at, excluded.key, excluded.status_id,
                            excluded.status_name, excluded.status_category, excluded.summary,
                            excluded.assignee_account_id, excluded.assignee_display_name,
                            excluded.priority, 'ok')
                      THEN excluded.source ELSE i.source END,
        failures = 0, deleted_at = NULL,
        -- who saw this version first, for webhook health (see service/sync/health.py)
        changed_by = CASE WHEN i.jira_updated_at < excluded.jira_updated_at
                          THEN excluded.source ELSE i.changed_by END,
        changed_at = CASE WHEN i.jira_updated_at < excluded.jira_updated_at
                          THEN now() ELSE i.changed_at END
     WHERE i.jira_updated_at <= excluded.jira_updated_at
       AND (i.deleted_at IS NULL OR i.deleted_at < excluded.jira_updated_at)
    RETURNING i.id, i.key, i.jira_updated_at AS current,
              (SELECT o.jira_updated_at FROM issues o WHERE o.id = i.id) AS previous
),
keys AS (
    INSERT INTO issue_keys AS k (key, issue_id)
    SELECT key, id FROM written
    ON CONFLICT (key) DO UPDATE SET issue_id = excluded.issue_id, seen_at = now()
     WHERE k.issue_id <> excluded.issue_id
),
found AS (
    DELETE FROM missing_keys m WHERE m.key = ANY(ARRAY(SELECT key FROM incoming))
)
"""

# The issues as ten arrays ($1 to $10, see `columns`), to unnest into rows named as
# WRITE_FORWARD reads them.
ARRAYS = """$1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::timestamptz[]"""
NAMES = """id, key, status_id, status_name, status_category, summary,
           assignee_account_id, assignee_display_name, priority, jira_updated_at"""

_UPSERT = f"""
WITH incoming AS (SELECT *, $11::text AS source FROM unnest({ARRAYS}) AS t({NAMES})),
{WRITE_FORWARD}
SELECT id, previous, current FROM written
"""  # noqa: S608 -- fixed fragments of this module, no input

_SELECT_BY_KEYS = """
SELECT k.key AS asked, i.*
  FROM issue_keys k JOIN issues i ON i.id = k.issue_id
 WHERE k.key = ANY($1::text[])
"""


async def upsert_issues(
    executor: Executor, issues: Sequence[Issue], source: Source
) -> dict[int, Outcome]:
    """Write many issues in one statement, only ever forward by Jira's `updated` time."""
    latest = _latest_by_id(issues)
    if not latest:
        return {}
    rows = await executor.fetch(_UPSERT, *columns(latest), source)
    written = {row["id"]: outcome(row["previous"], row["current"]) for row in rows}
    return {issue.id: written.get(issue.id, "stale") for issue in latest}


async def select_by_keys(executor: Executor, keys: Iterable[str]) -> dict[str, CachedIssue]:
    """The cached issues for the keys (current or former) that resolve to one."""
    rows = await executor.fetch(_SELECT_BY_KEYS, list(keys))
    return {row["asked"]: cached_from_row(row) for row in rows}


async def select_by_key(executor: Executor, key: str) -> CachedIssue | None:
    return (await select_by_keys(executor, [key])).get(key)


def cached_from_row(row: asyncpg.Record) -> CachedIssue:
    status = None
    if row["status_id"] is not None:
        status = Status(row["status_id"], row["status_name"], row["status_category"])
    assignee = None
    if row["assignee_account_id"] is not None:
        assignee = Assignee(row["assignee_account_id"], row["assignee_display_name"])
    issue = Issue(
        id=row["id"],
        key=row["key"],
        status=status,
        summary=row["summary"],
        assignee=assignee,
        priority=row["priority"],
        updated=row["jira_updated_at"],
    )
    return CachedIssue(
        issue, row["fetched_at"], row["source"], row["state"], row["error"], row["failures"]
    )


def _latest_by_id(issues: Sequence[Issue]) -> list[Issue]:
    # One statement cannot touch a row twice, so keep only the newest of duplicates.
    latest: dict[int, Issue] = {}
    for issue in issues:
        if issue.id not in latest or latest[issue.id].updated <= issue.updated:
            latest[issue.id] = issue
    return list(latest.values())


def columns(issues: Sequence[Issue]) -> tuple[list[object], ...]:
    """The issues as the ten arrays ($1 to $10) that every upsert statement unnests."""
    return (
        [i.id for i in issues],
        [i.key for i in issues],
        [i.status.id if i.status else None for i in issues],
        [i.status.name if i.status else None for i in issues],
        [i.status.category if i.status else None for i in issues],
        [i.summary for i in issues],
        [i.assignee.account_id if i.assignee else None for i in issues],
        [i.assignee.display_name if i.assignee else None for i in issues],
        [i.priority for i in issues],
        [i.updated for i in issues],
    )


def outcome(previous: datetime | None, current: datetime) -> Outcome:
    """The outcome of a written row; a row not written was stale."""
    if previous is None:
        return "created"
    return "unchanged" if previous == current else "updated"


# A tombstone. The issue row is written even if it was never cached, so that a late
# update older than the deletion finds it and stays out.
_MARK_DELETED = """
WITH tomb AS (
    INSERT INTO issues AS i (id, key, jira_updated_at, source, state, deleted_at)
    VALUES ($1, $2, $3, 'webhook', 'deleted', $3)
    ON CONFLICT (id) DO UPDATE SET
        state = 'deleted', source = 'webhook', fetched_at = now(),
        deleted_at = GREATEST(i.deleted_at, excluded.deleted_at)
    RETURNING id
)
INSERT INTO issue_keys (key, issue_id) SELECT $2, id FROM tomb
ON CONFLICT (key) DO UPDATE SET issue_id = excluded.issue_id, seen_at = now()
"""


async def mark_deleted(executor: Executor, issue_id: int, key: str, at: datetime) -> None:
    """Keep the issue as deleted; updates older than `at` never bring it back."""
    await executor.execute(_MARK_DELETED, issue_id, key, at)


async def add_aliases(executor: Executor, aliases: dict[str, int]) -> None:
    """Make former keys resolve to their issue, e.g. after Jira says an issue moved."""
    if aliases:
        await executor.execute(
            "INSERT INTO issue_keys (key, issue_id)"
            " SELECT * FROM unnest($1::text[], $2::bigint[]) AS t(key, issue_id)"
            " WHERE EXISTS (SELECT 1 FROM issues WHERE id = issue_id)"
            " ON CONFLICT (key) DO UPDATE SET issue_id = excluded.issue_id",
            list(aliases),
            list(aliases.values()),
        )


async def keys_of(executor: Executor, issue_id: int) -> list[str]:
    """Every key the issue has had, the current one first."""
    rows = await executor.fetch(
        "SELECT k.key FROM issue_keys k JOIN issues i ON i.id = k.issue_id"
        " WHERE k.issue_id = $1 ORDER BY k.key = i.key DESC, k.key",
        issue_id,
    )
    return [row["key"] for row in rows]


_MARK_NOT_FOUND = """
WITH remembered AS (
    INSERT INTO missing_keys (key) SELECT unnest($1::text[])
    ON CONFLICT (key) DO UPDATE SET checked_at = now()
)
UPDATE issues SET state = 'not_found', fetched_at = now(), error = NULL,
       source = CASE WHEN state = 'not_found' THEN source ELSE $2 END
 WHERE state <> 'deleted'
   AND id IN (SELECT issue_id FROM issue_keys WHERE key = ANY($1::text[]))
"""


async def mark_not_found(executor: Executor, keys: Sequence[str], source: Source) -> None:
    """Remember that Jira answered 404 for the keys (no such issue, or no permission)."""
    if keys:
        await executor.execute(_MARK_NOT_FOUND, list(keys), source)


async def mark_failed(executor: Executor, keys: Sequence[str], error: str) -> None:
    """Record a failed read on the cached issues behind the keys; their data stays."""
    if keys:
        await executor.execute(
            "UPDATE issues SET state = 'error', error = $2, failures = failures + 1"
            " WHERE state <> 'deleted'"
            " AND id IN (SELECT issue_id FROM issue_keys WHERE key = ANY($1::text[]))",
            list(keys),
            error,
        )


async def recently_missing(executor: Executor, keys: Sequence[str], within: float) -> set[str]:
    """Keys Jira answered 404 for less than `within` seconds ago: the negative cache."""
    rows = await executor.fetch(
        "SELECT key FROM missing_keys WHERE key = ANY($1::text[])"
        " AND checked_at > now() - make_interval(secs => $2)",
        list(keys),
        within,
    )
    return {row["key"] for row in rows}
