"""SQL over the tracked set: which keys the poller reads, when, and under whose lease."""

from __future__ import annotations

from collections.abc import Sequence

from service.storage.pool import Executor

# A claim moves next_due_at to the lease's end: leased keys leave the due range,
# and a lease left by a killed process makes its keys due again when it expires.
# `= ANY(ARRAY(...))` keeps the update to index lookups; a join with `due` was planned
# as a hash join over all of `tracked` between about 50k and 500k keys (measured).
_CLAIM = """
WITH due AS (
    SELECT key FROM tracked
     WHERE next_due_at <= now()
     ORDER BY next_due_at
     LIMIT $2
     FOR UPDATE SKIP LOCKED
)
UPDATE tracked t
   SET lease_owner = $1,
       lease_until = now() + make_interval(secs => $3),
       next_due_at = now() + make_interval(secs => $3)
 WHERE t.key = ANY(ARRAY(SELECT key FROM due))
RETURNING t.key
"""

# Each key gets its own next due time, spread by up to +-jitter of the TTL so that
# keys fetched together do not all come due together again.
_RELEASE = """
UPDATE tracked
   SET lease_owner = NULL, lease_until = NULL,
       next_due_at = now() + make_interval(
           secs => $3 * (1 + $4 * (2 * random() - 1)))
 WHERE key = ANY($2::text[]) AND lease_owner = $1
"""

_RETURN = """
UPDATE tracked
   SET lease_owner = NULL, lease_until = NULL, next_due_at = now()
 WHERE key = ANY($2::text[]) AND lease_owner = $1
"""


async def tracked_keys(executor: Executor) -> list[str]:
    rows = await executor.fetch("SELECT key FROM tracked ORDER BY key")
    return [row["key"] for row in rows]


async def track(executor: Executor, keys: Sequence[str]) -> None:
    """Add keys to the tracked set, due now; keys already tracked keep their schedule."""
    await executor.execute(
        "INSERT INTO tracked (key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", list(keys)
    )


async def claim_due(executor: Executor, owner: str, limit: int, lease_seconds: float) -> list[str]:
    rows = await executor.fetch(_CLAIM, owner, limit, lease_seconds)
    return [row["key"] for row in rows]


async def release(
    executor: Executor, owner: str, keys: Sequence[str], after: float, jitter: float = 0.1
) -> None:
    """End the lease and schedule the next read about `after` seconds from now."""
    await executor.execute(_RELEASE, owner, list(keys), after, jitter)


async def give_back(executor: Executor, owner: str, keys: Sequence[str]) -> None:
    """End the lease without a read having happened: the keys are due again at once."""
    await executor.execute(_RETURN, owner, list(keys))


async def reschedule(executor: Executor, keys: Sequence[str], after: float) -> None:
    """Move keys' next due time, e.g. after a webhook has just brought them fresh."""
    await executor.execute(
        "UPDATE tracked SET next_due_at = now() + make_interval(secs => $2)"
        " WHERE key = ANY($1::text[]) AND lease_owner IS NULL",
        list(keys),
        after,
    )


async def retarget(executor: Executor, old_keys: Sequence[str], new_key: str, after: float) -> None:
    """Track a moved issue under its new key only, so that it is polled once."""
    await executor.execute(
        "WITH old AS (DELETE FROM tracked WHERE key = ANY($1::text[]) AND key <> $2"
        " RETURNING key)"
        " INSERT INTO tracked (key, next_due_at)"
        " SELECT $2, now() + make_interval(secs => $3) WHERE EXISTS (SELECT 1 FROM old)"
        " ON CONFLICT DO NOTHING",
        list(old_keys),
        new_key,
        after,
    )


async def make_due(executor: Executor, keys: Sequence[str]) -> int:
    """Make tracked keys due for a read now; answer how many are tracked."""
    status: str = await executor.execute(
        "UPDATE tracked SET next_due_at = now() WHERE key = ANY($1::text[])", list(keys)
    )
    return int(status.split()[-1])
