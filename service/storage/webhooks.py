"""SQL over webhook deliveries: the dedupe record, the one-statement write, the dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.model import Issue
from service.storage.issues import Outcome, columns, outcome_of
from service.storage.pool import Executor

# A webhook's whole write in one statement (one round trip, atomic without BEGIN/COMMIT):
# record the delivery, then upsert the issue only if the delivery is new. A duplicate
# finds `delivery` empty and writes nothing. The upsert is storage/issues.py's, gated: the
# same forward-only WHERE, the same RETURNING that tells created, updated and unchanged
# apart, the same per-row index lookups that keep a generic plan linear.
_APPLY_EVENT = """
WITH delivery AS (
    INSERT INTO webhook_deliveries (id, event) VALUES ($12, $13)
    ON CONFLICT DO NOTHING RETURNING id
),
incoming AS (
    SELECT * FROM unnest(
        $1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::timestamptz[]
    ) AS t(id, key, status_id, status_name, status_category, summary,
           assignee_account_id, assignee_display_name, priority, jira_updated_at)
     WHERE EXISTS (SELECT 1 FROM delivery)
),
written AS (
    INSERT INTO issues AS i (
        id, key, status_id, status_name, status_category, summary,
        assignee_account_id, assignee_display_name, priority, jira_updated_at,
        fetched_at, source, state, error, failures, deleted_at)
    SELECT id, key, status_id, status_name, status_category, summary,
           assignee_account_id, assignee_display_name, priority, jira_updated_at,
           now(), $11, 'ok', NULL, 0, NULL
      FROM incoming
    ON CONFLICT (id) DO UPDATE SET
        key = excluded.key, status_id = excluded.status_id,
        status_name = excluded.status_name, status_category = excluded.status_category,
        summary = excluded.summary, assignee_account_id = excluded.assignee_account_id,
        assignee_display_name = excluded.assignee_display_name,
        priority = excluded.priority, jira_updated_at = excluded.jira_updated_at,
        fetched_at = now(), source = excluded.source, state = 'ok', error = NULL,
        failures = 0, deleted_at = NULL
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
    DELETE FROM missing_keys m
     WHERE m.key = ANY($2::text[]) AND EXISTS (SELECT 1 FROM delivery)
)
SELECT EXISTS (SELECT 1 FROM delivery) AS fresh, w.id, w.previous, w.current
  FROM (SELECT 1) AS one LEFT JOIN written AS w ON true
"""

# A list of letters shows this much of each body; one letter asked by id shows it whole.
PREVIEW_CHARS = 2000
WHOLE = 2**31 - 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    delivery_id: str | None
    error: str
    body: str
    received_at: datetime
    body_bytes: int
    truncated: bool


async def apply_issue_event(
    executor: Executor, issue: Issue, delivery_id: str, event: str
) -> Outcome | None:
    """Record a webhook delivery and write its issue forward; None for a repeated delivery."""
    rows = await executor.fetch(_APPLY_EVENT, *columns([issue]), "webhook", delivery_id, event)
    row = rows[0]
    if not row["fresh"]:
        return None
    return "stale" if row["id"] is None else outcome_of(row)


async def record_delivery(executor: Executor, delivery_id: str, event: str) -> bool:
    """Record a delivery; answer False when it was seen before (a retry or duplicate)."""
    inserted = await executor.fetchval(
        "INSERT INTO webhook_deliveries (id, event) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING true",
        delivery_id,
        event,
    )
    return inserted is not None


async def prune_deliveries(executor: Executor, older_than_days: float) -> int:
    status: str = await executor.execute(
        "DELETE FROM webhook_deliveries"
        " WHERE received_at < now() - make_interval(secs => $1 * 86400)",
        older_than_days,
    )
    return int(status.split()[-1])


async def add_dead_letter(
    executor: Executor, delivery_id: str | None, error: str, body: str
) -> None:
    await executor.execute(
        "INSERT INTO dead_letters (delivery_id, error, body) VALUES ($1, $2, $3)",
        delivery_id,
        error,
        body,
    )


# Only a preview of each body leaves PostgreSQL: a page of 1 MiB letters stays small.
_LIST = """
SELECT id, delivery_id, error, received_at, left(body, $3) AS body,
       octet_length(body) AS body_bytes, length(body) > $3 AS truncated
  FROM dead_letters
 WHERE $2::bigint IS NULL OR id < $2
 ORDER BY id DESC
 LIMIT $1
"""


async def list_dead_letters(
    executor: Executor, limit: int, before: int | None = None, preview: int = PREVIEW_CHARS
) -> list[DeadLetter]:
    """The newest letters (older than id `before`), each body cut to `preview` characters."""
    rows = await executor.fetch(_LIST, limit, before, preview)
    return [DeadLetter(**dict(row)) for row in rows]


async def get_dead_letter(executor: Executor, letter_id: int) -> DeadLetter | None:
    row = await executor.fetchrow(
        "SELECT id, delivery_id, error, received_at, body, octet_length(body) AS body_bytes,"
        " false AS truncated FROM dead_letters WHERE id = $1",
        letter_id,
    )
    return None if row is None else DeadLetter(**dict(row))


async def prune_dead_letters(executor: Executor, older_than_days: float) -> int:
    status: str = await executor.execute(
        "DELETE FROM dead_letters WHERE received_at < now() - make_interval(secs => $1 * 86400)",
        older_than_days,
    )
    return int(status.split()[-1])
