"""SQL over subscriptions: create, read, delete, lease, advance the cursor, record failures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from service.storage.changes import Cursor, Filter
from service.storage.pool import Executor


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    url: str
    secret: str = field(repr=False)
    project_id: str | None
    keys: list[str] | None
    fields: list[str] | None
    created_at: datetime
    cursor: Cursor
    delivered: int
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    paused_at: datetime | None
    paused_reason: str | None
    client: str | None = None
    previous_secret: str | None = field(default=None, repr=False)
    previous_secret_until: datetime | None = None

    @property
    def only(self) -> Filter:
        return Filter(project_id=self.project_id, keys=self.keys)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a delivery now: the current one, and during a rotation's
        window the one before it."""
        until = self.previous_secret_until
        if self.previous_secret is None or until is None or until <= now:
            return [self.secret]
        return [self.secret, self.previous_secret]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose subscriptions a caller sees: one client's (with those nobody owns, for a client
    of API_TOKENS, which saw them all before clients existed), or every one (`client` None)."""

    client: str | None
    unowned: bool = False


EVERYONE = Viewer(None, True)
# $2, $3 are the viewer in every statement that takes one, written out in each (the condition
# `($2::text IS NULL OR client = $2::text OR ($3::bool AND client IS NULL))`).


@dataclass(frozen=True, slots=True)
class Lag:
    """How far a subscription is behind the log's head: entries after its cursor, and age."""

    entries: int
    seconds: float


async def create(
    pool: asyncpg.Pool,
    url: str,
    secret: str,
    only: Filter,
    fields: Sequence[str] | None,
    start: Cursor,
    client: str | None = None,
    limit: int | None = None,
) -> Subscription | None:
    """Make a subscription owned by `client`; None when the client already holds `limit`."""
    async with pool.acquire() as connection, connection.transaction():
        # One client's creations in turn, so that two at once cannot both pass the count.
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"sub:{client}")
        held = await connection.fetchval(
            "SELECT count(*) FROM subscriptions WHERE client IS NOT DISTINCT FROM $1", client
        )
        if limit is not None and held >= limit:
            return None
        rows = await connection.fetch(
            "INSERT INTO subscriptions (url, secret, project_id, keys, fields, cursor_txid,"
            " cursor_position, client) VALUES ($1, $2, $3, $4, $5, $6::text::xid8, $7, $8)"
            " RETURNING *",
            url,
            secret,
            only.project_id,
            None if only.keys is None else list(only.keys),
            None if fields is None else list(fields),
            str(start.txid),
            start.position,
            client,
        )
    return _subscription(rows[0])


async def find(
    executor: Executor, subscription_id: int, viewer: Viewer = EVERYONE
) -> Subscription | None:
    row = await executor.fetchrow(
        "SELECT * FROM subscriptions WHERE id = $1"
        " AND ($2::text IS NULL OR client = $2::text OR ($3::bool AND client IS NULL))",
        subscription_id,
        *_of(viewer),
    )
    return None if row is None else _subscription(row)


async def listed(executor: Executor, viewer: Viewer = EVERYONE) -> list[Subscription]:
    rows = await executor.fetch(
        "SELECT * FROM subscriptions WHERE $1::int IS NULL"
        " AND ($2::text IS NULL OR client = $2::text OR ($3::bool AND client IS NULL))"
        " ORDER BY id",
        None,
        *_of(viewer),
    )
    return [_subscription(row) for row in rows]


async def delete(executor: Executor, subscription_id: int, viewer: Viewer = EVERYONE) -> bool:
    gone = await executor.fetchval(
        "DELETE FROM subscriptions WHERE id = $1"
        " AND ($2::text IS NULL OR client = $2::text OR ($3::bool AND client IS NULL))"
        " RETURNING id",
        subscription_id,
        *_of(viewer),
    )
    return gone is not None


async def resume(
    executor: Executor, subscription_id: int, viewer: Viewer = EVERYONE
) -> Subscription | None:
    row = await executor.fetchrow(
        "UPDATE subscriptions SET paused_at = NULL, paused_reason = NULL, failing_since = NULL"
        " WHERE id = $1"
        " AND ($2::text IS NULL OR client = $2::text OR ($3::bool AND client IS NULL))"
        " RETURNING *",
        subscription_id,
        *_of(viewer),
    )
    return None if row is None else _subscription(row)


async def pause(executor: Executor, subscription_id: int, reason: str) -> None:
    """Pause it now, saying why (a target no longer allowed), and hand its lease back."""
    await executor.execute(
        "UPDATE subscriptions SET paused_at = coalesce(paused_at, now()), paused_reason = $2,"
        " last_error = $2, last_error_at = now(), lease_owner = NULL, lease_until = NULL"
        " WHERE id = $1",
        subscription_id,
        reason,
    )


async def rotate(
    executor: Executor, subscription_id: int, viewer: Viewer, secret: str, overlap: float
) -> Subscription | None:
    """A new secret; the current one keeps signing too for `overlap` seconds."""
    row = await executor.fetchrow(
        "UPDATE subscriptions SET previous_secret = secret,"
        " previous_secret_until = now() + make_interval(secs => $5), secret = $4"
        " WHERE id = $1"
        " AND ($2::text IS NULL OR client = $2::text OR ($3::bool AND client IS NULL))"
        " RETURNING *",
        subscription_id,
        *_of(viewer),
        secret,
        overlap,
    )
    return None if row is None else _subscription(row)


def _of(viewer: Viewer) -> tuple[str | None, bool]:
    return viewer.client, viewer.unowned


async def lag(executor: Executor, subscription: Subscription) -> Lag:
    """Entries of the log after the cursor (before the subscription's filters) and their age."""
    rows = await executor.fetch(
        "SELECT count(*) AS entries,"
        " coalesce(extract(epoch FROM now() - min(at)), 0)::float8 AS seconds"
        " FROM changes WHERE (txid, position) > ($1::text::xid8, $2::bigint)",
        str(subscription.cursor.txid),
        subscription.cursor.position,
    )
    return Lag(rows[0]["entries"], rows[0]["seconds"])


# Leases: one replica at a time delivers a subscription; a lease left by a killed process
# expires, and another replica takes over from the stored cursor.

_CLAIM = """
WITH free AS (
    SELECT id, CASE WHEN lease_until < now() AND lease_owner <> $1 THEN lease_owner END
           AS previous
      FROM subscriptions
     WHERE paused_at IS NULL
       AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $1)
       AND NOT (id = ANY($3::bigint[]))
     ORDER BY id
     FOR UPDATE SKIP LOCKED
)
UPDATE subscriptions s
   SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
  FROM free WHERE s.id = free.id
RETURNING s.*, free.previous
"""


async def claim(
    executor: Executor,
    owner: str,
    seconds: float,
    held: Sequence[int],
    taken: list[tuple[str, str]] | None = None,
) -> list[Subscription]:
    """Lease every unpaused subscription nobody holds, and this owner's not in `held`.

    An owner's own lease outside `held` is one whose worker ended (the database went away
    under it, say): the next claim starts it again rather than waiting for the lease to end.
    """
    rows = await executor.fetch(_CLAIM, owner, seconds, list(held))
    if taken is not None:  # (subscription, former owner) for leases that ran out
        taken += [(str(row["id"]), row["previous"]) for row in rows if row["previous"]]
    return [_subscription(row) for row in rows]


async def renew(executor: Executor, owner: str, seconds: float, held: Sequence[int]) -> set[int]:
    """Extend this owner's leases; answer those it still holds (unpaused, not deleted)."""
    rows = await executor.fetch(
        "UPDATE subscriptions SET lease_until = now() + make_interval(secs => $2)"
        " WHERE id = ANY($3::bigint[]) AND lease_owner = $1 AND paused_at IS NULL"
        " RETURNING id",
        owner,
        seconds,
        list(held),
    )
    return {row["id"] for row in rows}


async def release(executor: Executor, owner: str) -> None:
    await executor.execute(
        "UPDATE subscriptions SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
        owner,
    )


async def advance(
    executor: Executor, subscription_id: int, owner: str, cursor: Cursor, delivered: int
) -> bool:
    """Move the cursor under this owner's lease; False when the lease was lost."""
    done = await executor.fetchval(
        "UPDATE subscriptions SET cursor_txid = $3::text::xid8, cursor_position = $4,"
        " delivered = delivered + $5,"
        " last_success_at = CASE WHEN $5 > 0 THEN now() ELSE last_success_at END,"
        " failing_since = CASE WHEN $5 > 0 THEN NULL ELSE failing_since END"
        " WHERE id = $1 AND lease_owner = $2 AND lease_until > now() RETURNING id",
        subscription_id,
        owner,
        str(cursor.txid),
        cursor.position,
        delivered,
    )
    return done is not None


_FAIL = """
UPDATE subscriptions s
   SET last_error = $3, last_error_at = now(), failing_since = f.since,
       paused_at = CASE WHEN f.pause THEN now() END,
       paused_reason = CASE WHEN f.pause THEN $5 END,
       lease_owner = CASE WHEN f.pause THEN NULL ELSE s.lease_owner END,
       lease_until = CASE WHEN f.pause THEN NULL ELSE s.lease_until END
  FROM (SELECT id, coalesce(failing_since, now()) AS since,
               $4::float8 IS NULL
               OR now() - coalesce(failing_since, now()) >= make_interval(secs => $4::float8)
               AS pause
          FROM subscriptions WHERE id = $1 AND lease_owner = $2 FOR UPDATE) f
 WHERE s.id = f.id
RETURNING f.pause
"""


async def fail(
    executor: Executor, subscription_id: int, owner: str, error: str, pause_after: float | None
) -> bool | None:
    """Record a failed attempt; pause when failing for `pause_after` seconds (None: at once).

    Answers whether it paused, or None when it is gone or no longer this owner's.
    """
    if pause_after is None:
        reason = error
    else:
        reason = f"failing for over {pause_after:g} s (SUBSCRIPTION_PAUSE_AFTER); last: {error}"
    paused: bool | None = await executor.fetchval(
        _FAIL, subscription_id, owner, error, pause_after, reason
    )
    return paused


def _subscription(row: asyncpg.Record) -> Subscription:
    return Subscription(
        id=row["id"],
        url=row["url"],
        secret=row["secret"],
        project_id=row["project_id"],
        keys=row["keys"],
        fields=row["fields"],
        created_at=row["created_at"],
        cursor=Cursor(row["cursor_txid"], row["cursor_position"]),
        delivered=row["delivered"],
        last_success_at=row["last_success_at"],
        last_error=row["last_error"],
        last_error_at=row["last_error_at"],
        paused_at=row["paused_at"],
        paused_reason=row["paused_reason"],
        client=row["client"],
        previous_secret=row["previous_secret"],
        previous_secret_until=row["previous_secret_until"],
    )
