"""SQL over webhook deliveries: the dedupe record, its pruning, and the dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.storage.pool import Executor


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    delivery_id: str | None
    error: str
    body: str
    received_at: datetime


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


async def list_dead_letters(executor: Executor, limit: int) -> list[DeadLetter]:
    rows = await executor.fetch(
        "SELECT id, delivery_id, error, body, received_at FROM dead_letters"
        " ORDER BY id DESC LIMIT $1",
        limit,
    )
    return [DeadLetter(**dict(row)) for row in rows]
