"""The benchmark's databases: one fresh database per world, filled in bulk with plain SQL."""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil  # type: ignore[import-untyped]  # no stubs in the venv; only bench uses it

from bench.payloads import FIRST_ID, PROJECT
from service.storage import migrate
from service.storage.pool import Connection

PREFIX = "bench_"

# Issues n = $1..$2 as the simulator seeds them in one project (id $3 + n, key $4 || n),
# cached long ago from an older Jira `updated`: every one is stale and due.
_ISSUES = """
INSERT INTO issues (id, key, status_id, status_name, status_category, summary,
                    priority, jira_updated_at, fetched_at, source, state)
SELECT $3::bigint + g, $4::text || g, '1', 'To Do', 'new', 'seeded ' || g,
       'Medium', now() - interval '90 days', now() - interval '2 hours', 'poll', 'ok'
  FROM generate_series($1::int, $2::int) AS g
"""
_KEYS = """
INSERT INTO issue_keys (key, issue_id)
SELECT $4::text || g, $3::bigint + g FROM generate_series($1::int, $2::int) AS g
"""
# $3 = seconds of spread: next_due_at rises evenly with n over [now - 3 * $3, now + $3), so
# three quarters of each batch are due, and keys due together lie together in the table,
# as they do once batches have been claimed and released a few times.
_TRACKED = """
INSERT INTO tracked (key, next_due_at)
SELECT $4::text || g,
       now() - make_interval(secs => 3 * $3::float8)
             + make_interval(secs => 4 * $3::float8 * (g - $1) / ($2 - $1 + 1.0))
  FROM generate_series($1::int, $2::int) AS g
"""
_LINKS = """
INSERT INTO links (project_id, key)
SELECT 'bench', $3::text || g FROM generate_series($1::int, $2::int) AS g
"""


async def connect(dsn: str) -> asyncpg.Connection:
    """A connection with the server's defaults, as the service's pool opens them."""
    return await asyncpg.connect(dsn)


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def fresh_database(admin_dsn: str, label: str) -> str:
    """Create an empty database with our migrations applied; answer its DSN."""
    name = f"{PREFIX}{label}_{os.getpid()}_{int(time.time())}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    connection = await asyncpg.connect(dsn)
    try:
        await migrate.apply_migrations(connection)
    finally:
        await connection.close()
    return dsn


def _orphaned(name: str) -> bool:
    """This run's database, or one whose run (the pid in its name) is gone."""
    parts = name.split("_")
    pid = int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else 0
    return pid == os.getpid() or not psutil.pid_exists(pid)


async def drop_databases(admin_dsn: str) -> list[str]:
    """Drop this run's databases and any a killed run left; a running bench keeps its own."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        rows = await admin.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", PREFIX + "%"
        )
        names = [row["datname"] for row in rows if _orphaned(row["datname"])]
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    return names


async def seed(
    connection: Connection, first: int, last: int, spread: float, links: bool = False
) -> None:
    """Cache and track issues first..last (stale), optionally linked to project `bench`."""
    async with connection.transaction():
        prefix = f"{PROJECT}-"
        await connection.execute(_ISSUES, first, last, FIRST_ID, prefix)
        await connection.execute(_KEYS, first, last, FIRST_ID, prefix)
        await connection.execute(_TRACKED, first, last, spread, prefix)
        if links:
            await connection.execute(_LINKS, first, last, prefix)
    await connection.execute("VACUUM ANALYZE issues, issue_keys, tracked, links")


async def make_all_due(connection: asyncpg.Connection) -> int:
    """Every tracked key due now, leases cleared, the cache stale again."""
    await connection.execute(
        "UPDATE issues SET jira_updated_at = now() - interval '90 days',"
        " fetched_at = now() - interval '2 hours'"
    )
    status: str = await connection.execute(
        "UPDATE tracked SET next_due_at = now() - interval '1 hour',"
        " lease_owner = NULL, lease_until = NULL"
    )
    await connection.execute("VACUUM ANALYZE issues, tracked")
    return int(status.split()[-1])


async def server_facts(connection: asyncpg.Connection) -> dict[str, str]:
    names = ("server_version", "shared_buffers", "synchronous_commit", "fsync", "max_connections")
    facts = {name: str(await connection.fetchval(f"SHOW {name}")) for name in names}
    facts["version"] = str(await connection.fetchval("SELECT version()"))
    return facts
