"""SQL behind webhook setup: our registration, the projects it should cover, the last delivery."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.storage.pool import Connection, Executor

_COLUMNS = "webhook_id, url, all_projects, jql, set_at, checked_at, manage"

# jira_project(key) (migration 011): NULL for a numeric id; the few distinct prefixes are
# checked here rather than each key by a regular expression (2.1 s over 1,000,000 keys).
_PROJECTS = "SELECT DISTINCT jira_project(key) AS project FROM tracked"
_PROJECT = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class Registration:
    """What `webhook install` registered, and the filter last set on it."""

    webhook_id: str
    url: str
    all_projects: bool
    jql: str
    set_at: datetime
    checked_at: datetime
    manage: bool = True  # keep its filter on the tracked projects (install --no-manage: no)


async def load(executor: Executor) -> Registration | None:
    row = await executor.fetchrow(f"SELECT {_COLUMNS} FROM webhook_registration")  # noqa: S608 -- constant columns
    return None if row is None else Registration(**dict(row))


async def save(executor: Executor, registration: Registration) -> None:
    await executor.execute(
        f"INSERT INTO webhook_registration ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"  # noqa: S608 -- constant columns
        " ON CONFLICT (singleton) DO UPDATE SET webhook_id = $1, url = $2, all_projects = $3,"
        " jql = $4, set_at = $5, checked_at = $6, manage = $7",
        registration.webhook_id,
        registration.url,
        registration.all_projects,
        registration.jql,
        registration.set_at,
        registration.checked_at,
        registration.manage,
    )


async def forget(executor: Executor) -> None:
    await executor.execute("DELETE FROM webhook_registration")


async def claim_check(connection: Connection, now: datetime, every: float) -> Registration | None:
    """Lock the registration if no replica checked it in the last `every` seconds.

    Call inside a transaction: the lock holds other replicas off until it ends, and they skip
    rather than wait.
    """
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM webhook_registration"  # noqa: S608 -- constant columns
        " WHERE checked_at <= $1 FOR UPDATE SKIP LOCKED",
        now - timedelta(seconds=every),
    )
    return None if row is None else Registration(**dict(row))


async def mark_checked(connection: Connection, now: datetime, jql: str | None = None) -> None:
    """Record the check, and the filter when it was set anew."""
    await connection.execute(
        "UPDATE webhook_registration SET checked_at = $1,"
        " jql = coalesce($2, jql), set_at = CASE WHEN $2 IS NULL THEN set_at ELSE $1 END",
        now,
        jql,
    )


async def tracked_projects(executor: Executor) -> list[str]:
    """The Jira projects of the tracked issues."""
    rows = await executor.fetch(_PROJECTS)
    return sorted(p for row in rows if (p := row["project"]) and _PROJECT.fullmatch(p))


async def last_delivery(executor: Executor) -> datetime | None:
    """When the newest webhook delivery we kept arrived (kept for WEBHOOK_DEDUPE_DAYS)."""
    received: datetime | None = await executor.fetchval(
        "SELECT max(received_at) FROM webhook_deliveries"
    )
    return received
