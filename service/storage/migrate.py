"""Applies the numbered SQL migrations once each, in order, under an advisory lock."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from importlib.abc import Traversable

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# migrations/ at the top of the repository, installed as this package (see pyproject.toml):
# read as package data, it is found wherever the code is, wheel or editable install.
MIGRATIONS_PACKAGE = "service.migrations"
# Any constant works, as long as every replica uses the same one.
_LOCK_ID = 0x6A697261  # "jira"

Connection = asyncpg.Connection | PoolConnectionProxy
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class NoMigrationsError(RuntimeError):
    """The installed code carries no migration files: a broken install, not an empty schema."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"no migration files (*.sql) found in {where}: the package was installed without "
            "its migrations; reinstall it from a wheel or source tree that ships them"
        )


def migrations_dir() -> Traversable:
    return resources.files(MIGRATIONS_PACKAGE)


def migration_files(directory: Traversable | None = None) -> list[Traversable]:
    """The migration files in version order; raises NoMigrationsError when there are none."""
    directory = directory or migrations_dir()
    found = sorted(
        (entry for entry in directory.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    if not found:
        raise NoMigrationsError(str(directory))
    return found


def version_of(file: Traversable) -> str:
    return file.name.removesuffix(".sql")


def known_versions(directory: Traversable | None = None) -> list[str]:
    return [version_of(file) for file in migration_files(directory)]


async def apply_migrations(
    connection: Connection, directory: Traversable | None = None
) -> list[str]:
    """Apply each pending file in its own transaction; answer the versions applied."""
    files = migration_files(directory)
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await connection.execute(_CREATE_TABLE)
        done = await applied_versions(connection)
        pending = [file for file in files if version_of(file) not in done]
        for file in pending:
            await _apply(connection, file)
        return [version_of(file) for file in pending]
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def applied_versions(connection: Connection) -> set[str]:
    """The versions recorded as applied; none when the database was never migrated."""
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    rows = await connection.fetch("SELECT version FROM schema_migrations")
    return {row["version"] for row in rows}


async def pending_versions(
    connection: Connection, directory: Traversable | None = None
) -> list[str]:
    """The versions this code has that the database lacks: the schema is behind when any."""
    known = known_versions(directory)
    done = await applied_versions(connection)
    return [version for version in known if version not in done]


async def _apply(connection: Connection, file: Traversable) -> None:
    sql = await asyncio.to_thread(file.read_text, encoding="utf-8")
    async with connection.transaction():
        await connection.execute(sql)
        await connection.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)", version_of(file)
        )
    log.info("applied migration", extra={"version": version_of(file)})
