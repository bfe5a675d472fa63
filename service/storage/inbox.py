"""SQL over webhook deliveries, their one writer: the dedupe record, the grouped write, the
dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from service.model import Issue
from service.storage import issues
from service.storage.issues import Outcome
from service.storage.pool import Executor, affected

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


# Deliveries that carry their issue whole, many at once: the group commit's one statement
# (one round trip, atomic without BEGIN/COMMIT, answered after its commit). Each delivery is
# recorded ($11, $12); a delivery seen before finds no fresh record and writes nothing; of
# several deliveries of one issue, the newest by `updated` is written, forward only, by the
# write rule of storage/issues.py. The rows: each fresh delivery, then each written issue.
_RECORD_AND_WRITE = f"""
WITH delivery AS (
    INSERT INTO webhook_deliveries (id, event)
    SELECT * FROM unnest($11::text[], $12::text[])
    ON CONFLICT DO NOTHING RETURNING id
),
sent AS (
    SELECT * FROM unnest({issues.ARRAYS}, $11::text[]) AS t({issues.NAMES}, delivery)
),
incoming AS (
    SELECT DISTINCT ON (id) {issues.NAMES}, 'webhook'::text AS source
      FROM sent WHERE delivery = ANY(ARRAY(SELECT id FROM delivery))
     ORDER BY id, jira_updated_at DESC
),
{issues.WRITE_FORWARD}
SELECT id AS delivery, NULL::bigint AS issue, NULL::timestamptz AS previous,
       NULL::timestamptz AS current FROM delivery
UNION ALL
SELECT NULL, id, previous, current FROM written
"""  # noqa: S608 -- fixed fragments of storage/issues.py, no input


@dataclass(frozen=True, slots=True)
class Update:
    """A delivery that carries its issue whole."""

    delivery_id: str
    event: str
    issue: Issue


async def record_and_write(executor: Executor, updates: Sequence[Update]) -> list[Outcome | None]:
    """Record the deliveries and write their issues forward, in one statement; per update its
    outcome, None for a delivery seen before (also earlier in `updates`)."""
    rows = await executor.fetch(
        _RECORD_AND_WRITE,
        *issues.columns([update.issue for update in updates]),
        [update.delivery_id for update in updates],
        [update.event for update in updates],
    )
    fresh = {row["delivery"] for row in rows if row["delivery"] is not None}
    written = {row["issue"]: (row["previous"], row["current"]) for row in rows if row["issue"]}
    found: list[Outcome | None] = []
    for update in updates:
        if update.delivery_id not in fresh:
            found.append(None)
            continue
        fresh.discard(update.delivery_id)
        found.append(_outcome(update.issue, written.get(update.issue.id)))
    return found


def _outcome(issue: Issue, row: tuple[datetime | None, datetime] | None) -> Outcome:
    """Stale unless the issue was written and this delivery was not older than what it found:
    of several deliveries of one issue, each that would have gone forward by itself counts."""
    if row is None or (row[0] is not None and issue.updated < row[0]):
        return "stale"
    return issues.outcome(*row)


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
    return await affected(
        executor,
        "DELETE FROM webhook_deliveries"
        " WHERE received_at < now() - make_interval(secs => $1 * 86400)",
        older_than_days,
    )


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
    return await affected(
        executor,
        "DELETE FROM dead_letters WHERE received_at < now() - make_interval(secs => $1 * 86400)",
        older_than_days,
    )
