"""SQL over the tracked set: which keys the poller reads, when, and under whose lease."""

from __future__ import annotations

import json
from collections.abc import Sequence

from service.storage.pool import Executor, affected

# Due times spread over the last fifth of the TTL: never later, so stale means due.
JITTER = 0.2

# A claim moves next_due_at to the lease's end: leased keys leave the due range,
# and a lease left by a killed process makes its keys due again when it expires.
# A due key whose issue was written recently (by a webhook or a read) needs no Jira
# call: it is only moved to a TTL after that write, unleased, and not answered. The
# lookup costs a claim of 1,000 of 200,000 keys 25 ms against 16 ms without it (measured).
# `= ANY(ARRAY(...))` keeps the update to index lookups; a join with `due` was planned
# as a hash join over all of `tracked` between about 50k and 500k keys (measured).
_CLAIM = """
WITH due AS (
    SELECT key, lease_owner AS previous FROM tracked
     WHERE next_due_at <= now()
     ORDER BY next_due_at
     LIMIT $2
     FOR UPDATE SKIP LOCKED
)
UPDATE tracked t
   SET (lease_owner, lease_until, next_due_at) = (
       SELECT CASE WHEN f.until IS NULL THEN $1 END,
              CASE WHEN f.until IS NULL THEN now() + make_interval(secs => $3) END,
              coalesce(f.until, now() + make_interval(secs => $3))
         FROM (SELECT (SELECT i.fetched_at + make_interval(secs => $4 * (1 - $5 * random()))
                         FROM issue_keys k JOIN issues i ON i.id = k.issue_id
                        WHERE k.key = t.key AND i.state = 'ok'
                          AND i.fetched_at > now() - make_interval(secs => $4 * (1 - $5)))
                  AS until) f)
 WHERE t.key = ANY(ARRAY(SELECT key FROM due))
RETURNING t.key, t.lease_owner IS NOT NULL AS claimed,
          (SELECT coalesce(jsonb_object_agg(previous, n), '{}')::text FROM
            (SELECT previous, count(*) AS n FROM due WHERE previous IS NOT NULL
              GROUP BY previous) AS p) AS taken
"""

# Each key gets its own next due time, spread over the last `jitter` part of the TTL
# so that keys fetched together do not come due together again, and never later than
# the TTL: a key that reads as stale is always due. The TTL counts from the read that
# wrote the issue (its own, earlier transaction), not from this release.
_RELEASE = """
UPDATE tracked t
   SET lease_owner = NULL, lease_until = NULL,
       next_due_at = coalesce(
           (SELECT i.fetched_at FROM issue_keys k JOIN issues i ON i.id = k.issue_id
             WHERE k.key = t.key AND i.fetched_at > now() - make_interval(secs => $3)),
           now()) + make_interval(secs => $3 * (1 - $4 * random()))
 WHERE t.key = ANY($2::text[]) AND t.lease_owner = $1
"""

# One statement: record the settings in force and, only when they changed, recompute
# every unleased key's due time from its issue's fetched_at (keys not cached stay due).
_FOLLOW = """
WITH previous AS (
    SELECT cache_ttl, poll_interval FROM schedule_basis FOR UPDATE
),
changed AS (
    SELECT NOT EXISTS (
        SELECT 1 FROM previous WHERE cache_ttl = $1 AND poll_interval = $2) AS yes
),
basis AS (
    INSERT INTO schedule_basis (one, cache_ttl, poll_interval) VALUES (true, $1, $2)
    ON CONFLICT (one) DO UPDATE SET cache_ttl = $1, poll_interval = $2
),
moved AS (
    UPDATE tracked t
       SET next_due_at = i.fetched_at + make_interval(secs => $1 * (1 - $3 * random()))
      FROM issue_keys k JOIN issues i ON i.id = k.issue_id
     WHERE k.key = t.key AND t.lease_owner IS NULL AND (SELECT yes FROM changed)
)
SELECT yes FROM changed
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


async def touch(executor: Executor, keys: Sequence[str]) -> None:
    """Record that keys were read or linked just now, tracking those not tracked yet.

    The row lock this takes is what keeps `forget_unread` from deleting a key that is
    being linked at the same moment: it re-checks read_at after the lock is released.
    """
    await executor.execute(
        "INSERT INTO tracked (key) SELECT unnest($1::text[])"
        " ON CONFLICT (key) DO UPDATE SET read_at = now()",
        sorted(set(keys)),
    )


async def forget_unread(executor: Executor, seconds: float) -> int:
    """Stop tracking keys neither linked nor read for `seconds`; answer how many."""
    return await affected(
        executor,
        "DELETE FROM tracked t WHERE read_at < now() - make_interval(secs => $1)"
        " AND NOT EXISTS (SELECT 1 FROM links l WHERE l.key = t.key)",
        seconds,
    )


async def claim_due(
    executor: Executor,
    owner: str,
    limit: int,
    lease_seconds: float,
    ttl: float,
    taken: dict[str, int] | None = None,
) -> tuple[list[str], int]:
    """Lease due keys for a read; answer those leased and how many due keys were handled.

    `taken` receives, by former owner, how many keys came from a lease that ran out.
    """
    rows = await executor.fetch(_CLAIM, owner, limit, lease_seconds, ttl, JITTER)
    if taken is not None and rows:
        taken.update(json.loads(rows[0]["taken"]))
    return [row["key"] for row in rows if row["claimed"]], len(rows)


async def renew(executor: Executor, owner: str, keys: Sequence[str], seconds: float) -> None:
    """Hold this owner's lease on `keys` on for `seconds` more: their read is still going."""
    await executor.execute(
        "UPDATE tracked SET lease_until = now() + make_interval(secs => $3),"
        " next_due_at = now() + make_interval(secs => $3)"
        " WHERE key = ANY($2::text[]) AND lease_owner = $1",
        owner,
        list(keys),
        seconds,
    )


async def release(executor: Executor, owner: str, keys: Sequence[str], after: float) -> None:
    """End the lease and schedule the next read at most `after` seconds from now."""
    await executor.execute(_RELEASE, owner, list(keys), after, JITTER)


async def follow_settings(executor: Executor, ttl: float, poll_interval: float) -> bool:
    """Recompute due times when the TTL or poll interval differ from the stored ones.

    Answers whether it did: due times are stored, so a shorter TTL after a restart
    would otherwise be ignored until the old, longer one ran out.
    """
    changed: bool = await executor.fetchval(_FOLLOW, ttl, poll_interval, JITTER)
    return changed


async def give_back(executor: Executor, owner: str, keys: Sequence[str]) -> None:
    """End the lease without a read having happened: the keys are due again at once."""
    await executor.execute(_RETURN, owner, list(keys))


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
    return await affected(
        executor, "UPDATE tracked SET next_due_at = now() WHERE key = ANY($1::text[])", list(keys)
    )


# Tracked keys whose issue is current as of its project's last sync (read since coverage
# began, read by us within `recheck`, answered ok) wait for verified_at + ttl, unread.
_RELEASE_VERIFIED = """
UPDATE tracked t
   SET lease_owner = NULL, lease_until = NULL,
       next_due_at = s.verified_at + make_interval(secs => $3)
  FROM issue_keys k, issues i, sync_projects s
 WHERE t.key = ANY($2::text[]) AND t.lease_owner = $1
   AND k.key = t.key AND i.id = k.issue_id AND i.state = 'ok'
   AND s.project = jira_project(i.key)
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


# Only keys no project links; the row lock of a concurrent link's `touch` orders the two,
# so a key linked at the same moment is tracked again by that link.
_UNTRACK = """
DELETE FROM tracked t
 WHERE t.key = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM links l WHERE l.key = t.key)
   AND ($2 OR EXISTS (SELECT 1 FROM missing_keys m WHERE m.key = t.key))
RETURNING t.key
"""


async def untrack(executor: Executor, keys: Sequence[str], only_missing: bool = False) -> list[str]:
    """Stop tracking the keys no project links (with `only_missing`, those Jira does not
    know either); answer which were untracked."""
    rows = await executor.fetch(_UNTRACK, list(keys), not only_missing)
    return sorted(row["key"] for row in rows)


async def keys_of_projects(executor: Executor, projects: list[str]) -> dict[str, list[str]]:
    """The tracked keys of each of the Jira `projects` (to name a mistyped one's keys)."""
    rows = await executor.fetch(
        "SELECT jira_project(key) AS project, array_agg(key ORDER BY key) AS keys FROM tracked"
        " WHERE jira_project(key) = ANY($1::text[]) GROUP BY 1",
        projects,
    )
    return {row["project"]: list(row["keys"]) for row in rows}
