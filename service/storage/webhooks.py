"""SQL over webhook deliveries: the dedupe record, the one-statement write, the dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.model import Issue
from service.storage import issues
from service.storage.issues import Outcome
from service.storage.pool import Executor

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
    """Record a webhook delivery and write its issue forward; None for a repeated delivery.

    One statement: the issue upsert of storage/issues.py, gated by the delivery's record.
    """
    return await issues.upsert_delivered(executor, issue, delivery_id, event)


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
