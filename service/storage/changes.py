"""SQL over the change log: read entries after a cursor, gap-free, and prune the old ones.

Why a reader that follows the cursors never misses an entry, with any number of writers on
any number of replicas: entries are written by a trigger inside the writing transaction
(migrations/008_changes.sql) and ordered by `(txid, position)`, where `txid` is the writing
transaction's id (or the issue's previous entry's, if higher: see below). A reader reads
only entries with `txid < pg_snapshot_xmin(pg_current_snapshot())`, in one statement, so in
one snapshot. Every transaction below that horizon has finished, so every entry below it
is already visible or never will be; every transaction still running, or yet to write, has
an id at or above it, so its entries will sort after anything the reader has passed. A
sequence alone would not do: a transaction that took a lower number can commit after a
reader passed it.

The ordering key is `GREATEST(own txid, the issue's previous entry's txid)` because row
locks make the writers of one issue take turns in an order their ids need not follow: an
older transaction may write an issue just after a younger one committed a write to it.
Sorting by the own id would put the later change first; the key keeps an issue's entries
in the order they happened, and it is never below the writer's own id, so the horizon
argument above still holds.

The trade-off: a long transaction anywhere on the PostgreSQL server (any database) holds
the horizon back, and entries written after it began are readable only once it ends. The
service's own transactions are short; the pause is as long as the longest one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from service.model import CachedIssue
from service.storage.issues import cached_from_row
from service.storage.pool import Executor

_CURSOR = re.compile(r"[0-9a-f]{32}")


class Cursor(NamedTuple):
    """A place in the log: entries after it are `(txid, position)` greater than it.

    Encoded as 32 hex digits, so that cursors also sort as strings in log order.
    """

    txid: int
    position: int

    def encode(self) -> str:
        return f"{self.txid:016x}{self.position:016x}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        if not _CURSOR.fullmatch(text):
            raise InvalidCursorError(text)
        txid, position = int(text[:16], 16), int(text[16:], 16)
        if max(txid, position) >= 2**63:  # PostgreSQL's bigint; no xid gets that far
            raise InvalidCursorError(text)
        return cls(txid, position)


class InvalidCursorError(ValueError):
    def __init__(self, cursor: str) -> None:
        super().__init__(f"{cursor[:64]!r} is not a cursor of this change log")
        self.cursor = cursor


class CursorExpiredError(LookupError):
    def __init__(self, cursor: Cursor) -> None:
        super().__init__(
            f"changes after {cursor.encode()} were pruned (past CHANGES_RETENTION); "
            "read the current state again, then follow from a new cursor"
        )
        self.cursor = cursor


@dataclass(frozen=True, slots=True)
class Filter:
    """Which entries a reader wants: one project's links, some keys (any they had), or all."""

    project_id: str | None = None
    keys: Sequence[str] | None = None

    def admits(self, reach: Reach) -> bool:
        """The SQL filter of read_changes, applied in memory to an entry read with its reach."""
        if self.project_id is not None and self.project_id not in reach.projects:
            return False
        return self.keys is None or not reach.keys.isdisjoint(self.keys)


@dataclass(frozen=True, slots=True)
class Reach:
    """Who an entry concerns when it is read: every key its issue has had, the projects
    linking any of them now."""

    keys: frozenset[str]
    projects: frozenset[str]


@dataclass(frozen=True, slots=True)
class Change:
    cursor: Cursor
    at: datetime
    source: str
    fields: dict[str, list[Any]]
    cached: CachedIssue


@dataclass(frozen=True, slots=True)
class Page:
    changes: list[Change]
    next: Cursor  # where to read from next, also when the page is empty
    full: bool = field(default=False)  # the limit was reached: more may be readable now
    reach: list[Reach] = field(default_factory=list)  # per change, when read with read_reach


# One statement, one snapshot: the bounds (horizon, pruned-to) and the page agree. The page
# is the readable window after the cursor ($1, $2), below the horizon, in log order; each
# read adds its own conditions and columns.
def _read_sql(conditions: str, limit: str, columns: str) -> str:
    return f"""
WITH bounds AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon,
           pg_snapshot_xmax(pg_current_snapshot()) AS unassigned,
           p.txid AS pruned_txid, p.position AS pruned_position
      FROM changes_pruned p
),
page AS (
    SELECT c.*
      FROM changes c, bounds b
     WHERE (c.txid, c.position) > ($1::xid8, $2::bigint)
       AND c.txid < b.horizon{conditions}
     ORDER BY c.txid, c.position
     LIMIT {limit}
)
SELECT b.horizon, b.unassigned, b.pruned_txid, b.pruned_position, page.*,
       page.issue_id AS id, 0 AS failures{columns}
  FROM bounds b LEFT JOIN page ON true
 ORDER BY page.txid, page.position
"""  # noqa: S608 (constants joined: no input reaches the text)


_READ = _read_sql(
    """
       AND ($3::text IS NULL OR EXISTS (
            SELECT 1 FROM issue_keys k JOIN links l ON l.key = k.key
             WHERE k.issue_id = c.issue_id AND l.project_id = $3))
       AND ($4::text[] IS NULL OR c.issue_id IN (
            SELECT issue_id FROM issue_keys WHERE key = ANY($4::text[])))""",
    "$5",
    "",
)


async def read_changes(executor: Executor, after: Cursor, only: Filter, limit: int) -> Page:
    """The readable entries after `after`, oldest first, and the cursor to read from next.

    Raises CursorExpiredError when entries after the cursor were pruned, and
    InvalidCursorError for a cursor beyond any this log has given.
    """
    rows = await executor.fetch(
        _READ, after.txid, after.position, only.project_id, _keys(only), limit
    )
    return _page(after, rows, limit)


async def read_reach(executor: Executor, after: Cursor, limit: int) -> Page:
    """As read_changes for every entry, each with its Reach, for filtering in memory."""
    rows = await executor.fetch(_READ_REACH, after.txid, after.position, limit)
    page = _page(after, rows, limit)
    reach = [
        Reach(frozenset(row["reach_keys"]), frozenset(row["reach_projects"]))
        for row in rows
        if row["txid"] is not None
    ]
    return Page(page.changes, page.next, page.full, reach)


def _page(after: Cursor, rows: list[asyncpg.Record], limit: int) -> Page:
    bounds = rows[0]
    _check(after, bounds)
    changes = [_change(row) for row in rows if row["txid"] is not None]
    if len(changes) == limit:
        return Page(changes, changes[-1].cursor, full=True)
    # Everything below the horizon was read: the next entry sorts after (horizon, 0).
    return Page(changes, max(after, Cursor(bounds["horizon"], 0)))


# _READ without its filters, with what they would test: the issue's keys, ever, and the
# projects linking one of them now (Filter.admits).
_READ_REACH = _read_sql(
    "",
    "$3",
    """,
       ARRAY(SELECT k.key FROM issue_keys k WHERE k.issue_id = page.issue_id) AS reach_keys,
       ARRAY(SELECT DISTINCT l.project_id FROM issue_keys k JOIN links l ON l.key = k.key
              WHERE k.issue_id = page.issue_id) AS reach_projects""",
)


async def current_cursor(executor: Executor) -> Cursor:
    """The cursor of "now": every entry readable later sorts after it."""
    horizon: int = await executor.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())")
    return Cursor(horizon, 0)


async def first_cursor(executor: Executor) -> Cursor:
    """The cursor before the whole retained log."""
    row = await executor.fetchrow("SELECT txid, position FROM changes_pruned")
    return Cursor(0, 0) if row is None else Cursor(row["txid"], row["position"])


async def settled(executor: Executor) -> bool:
    """True when every committed entry is readable: no older transaction holds it back."""
    return bool(
        await executor.fetchval(
            "SELECT coalesce(max(txid) < pg_snapshot_xmin(pg_current_snapshot()), true)"
            " FROM changes"
        )
    )


async def prune_changes(pool: asyncpg.Pool, older_than_seconds: float) -> int:
    """Delete the oldest entries, a prefix of the log, keeping every one within the retention.

    The prefix ends before the first entry that is young or not yet readable, so a reader
    can tell by its cursor alone whether it missed anything (CursorExpiredError).
    """
    async with pool.acquire() as connection, connection.transaction():
        end = await connection.fetchrow(_PRUNE_END, older_than_seconds)
        if end is None:
            return 0
        gone: int = await connection.fetchval(_PRUNE, end["txid"], end["position"])
    return gone


# The first entry to keep, else the horizon: below it everything has finished.
_PRUNE_END = """
SELECT txid, position FROM (
    (SELECT txid, position FROM changes
      WHERE at >= now() - make_interval(secs => $1)
         OR txid >= pg_snapshot_xmin(pg_current_snapshot())
      ORDER BY txid, position LIMIT 1)
    UNION ALL SELECT pg_snapshot_xmin(pg_current_snapshot()), 0
) AS ends ORDER BY txid, position LIMIT 1
"""

_PRUNE = """
WITH gone AS (
    DELETE FROM changes WHERE (txid, position) < ($1::xid8, $2::bigint)
    RETURNING txid, position
),
last AS (SELECT txid, position FROM gone ORDER BY txid DESC, position DESC LIMIT 1),
moved AS (
    UPDATE changes_pruned p SET txid = last.txid, position = last.position FROM last
     WHERE (last.txid, last.position) > (p.txid, p.position)
)
SELECT count(*) FROM gone
"""


def _keys(only: Filter) -> list[str] | None:
    return None if only.keys is None else list(only.keys)


def _check(after: Cursor, bounds: asyncpg.Record) -> None:
    if after < Cursor(bounds["pruned_txid"], bounds["pruned_position"]):
        raise CursorExpiredError(after)
    if after.txid > bounds["unassigned"]:
        raise InvalidCursorError(after.encode())


def _change(row: asyncpg.Record) -> Change:
    return Change(
        cursor=Cursor(row["txid"], row["position"]),
        at=row["at"],
        source=row["source"],
        fields=_fields(row),
        cached=cached_from_row(row),
    )


def _fields(row: asyncpg.Record) -> dict[str, list[Any]]:
    """{"field": [old, new]} over the served fields the write changed (all, when created)."""
    old, new = _served(row, "old_"), _served(row, "")
    return {name: [old[name], new[name]] for name in new if _changed(name, old[name], new[name])}


def _served(row: asyncpg.Record, prefix: str) -> dict[str, Any]:
    """The served fields of the row's new (or, with prefix old_, previous) values."""
    value = {name: row[prefix + name] for name in _SERVED_COLUMNS}
    status = None
    if value["status_id"] is not None:
        status = {
            "id": value["status_id"],
            "name": value["status_name"],
            "category": value["status_category"],
        }
    assignee = None
    if value["assignee_account_id"] is not None:
        assignee = {
            "account_id": value["assignee_account_id"],
            "display_name": value["assignee_display_name"],
        }
    return {
        "key": value["key"],
        "status": status,
        "summary": value["summary"],
        "assignee": assignee,
        "priority": value["priority"],
        "state": value["state"],
    }


def _changed(name: str, old: Any, new: Any) -> bool:
    if name == "state":
        # A failed read (state error) keeps the data: no change, as in the trigger's WHEN.
        return bool(_SERVED_STATE.get(old, old) != _SERVED_STATE.get(new, new))
    return bool(old != new)


_SERVED_COLUMNS = (
    "key",
    "status_id",
    "status_name",
    "status_category",
    "summary",
    "assignee_account_id",
    "assignee_display_name",
    "priority",
    "state",
)
_SERVED_STATE = {"error": "ok"}
