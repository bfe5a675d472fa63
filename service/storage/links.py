"""SQL over project links: a project of a calling service links to Jira issue keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.model import CachedIssue
from service.storage import tracking
from service.storage.issues import cached_from_row
from service.storage.pool import Executor

_LINK = "INSERT INTO links (project_id, key) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true"

# Unlinking leaves the key tracked: it is forgotten once neither linked nor read for
# TRACK_READS_FOR. Untracking here raced with a link in another project (measured:
# 7 of 1,000 keys linked but untracked), and with a read of the still-cached key.
_UNLINK = "DELETE FROM links WHERE project_id = $1 AND key = $2 RETURNING true"

_LIST = """
SELECT l.key AS asked, l.linked_at, m.key IS NOT NULL AS missing, i.*
  FROM links l
  LEFT JOIN issue_keys k ON k.key = l.key
  LEFT JOIN issues i ON i.id = k.issue_id
  LEFT JOIN missing_keys m ON m.key = l.key
 WHERE l.project_id = $1
 ORDER BY l.linked_at, l.key
"""


@dataclass(frozen=True, slots=True)
class Link:
    key: str
    linked_at: datetime
    cached: CachedIssue | None
    missing: bool


async def link(executor: Executor, project_id: str, key: str) -> bool:
    """Link and track the key; answer whether the link is new."""
    if isinstance(executor, asyncpg.Pool):
        async with executor.acquire() as connection:
            return await link(connection, project_id, key)
    async with executor.transaction():
        created = await executor.fetchval(_LINK, project_id, key)
        await tracking.touch(executor, [key])
    return bool(created)


async def unlink(connection: Executor, project_id: str, key: str) -> bool:
    """Unlink; a key Jira does not know, and no project links now, is untracked at once."""
    removed = await connection.fetchval(_UNLINK, project_id, key)
    if removed:
        await tracking.untrack(connection, [key], only_missing=True)
    return bool(removed)


async def linked_by(connection: Executor, keys: list[str]) -> dict[str, list[str]]:
    """The projects linking each of `keys` (keys nobody links are left out)."""
    rows = await connection.fetch(
        "SELECT key, array_agg(project_id ORDER BY project_id) AS projects FROM links"
        " WHERE key = ANY($1::text[]) GROUP BY key",
        keys,
    )
    return {row["key"]: list(row["projects"]) for row in rows}


async def list_links(connection: Executor, project_id: str) -> list[Link]:
    rows = await connection.fetch(_LIST, project_id)
    return [
        Link(
            key=row["asked"],
            linked_at=row["linked_at"],
            cached=cached_from_row(row) if row["id"] is not None else None,
            missing=row["missing"],
        )
        for row in rows
    ]


async def linked_keys(connection: Executor, project_id: str) -> list[str]:
    rows = await connection.fetch(
        "SELECT key FROM links WHERE project_id = $1 ORDER BY key", project_id
    )
    return [row["key"] for row in rows]
