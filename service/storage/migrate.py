"""Applies migrations/*.sql once each, in order, under an advisory lock."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Any constant works, as long as every replica uses the same one.
_LOCK_ID = 0x6A697261  # "jira"

Connection = asyncpg.Connection | PoolConnectionProxy
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


async def apply_migrations(connection: Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply each pending file in its own transaction; answer the versions applied."""
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await connection.execute(_CREATE_TABLE)
        done = await applied_versions(connection)
        pending = [path for path in migration_files(directory) if path.stem not in done]
        for path in pending:
            await _apply(connection, path)
        return [path.stem for path in pending]
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def applied_versions(connection: Connection) -> set[str]:
    rows = await connection.fetch("SELECT version FROM schema_migrations")
    return {row["version"] for row in rows}


async def pending_versions(connection: Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = await applied_versions(connection) if exists else set()
    return [path.stem for path in migration_files(directory) if path.stem not in done]


async def _apply(connection: Connection, path: Path) -> None:
    async with connection.transaction():
        await connection.execute(await asyncio.to_thread(path.read_text))
        await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
    log.info("applied migration", extra={"version": path.stem})
