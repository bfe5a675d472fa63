"""Migrations: each file once, in order, safe when replicas start together."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from service.cli.commands import check_migrations
from service.storage import migrate
from service.storage.migrate import apply_migrations, pending_versions
from tests.conftest import _with_database


@pytest.fixture
async def empty_dsn(server_dsn: str) -> AsyncIterator[str]:
    name = f"jsc_migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(server_dsn, name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_second_run_applies_nothing(empty_dsn: str) -> None:
    """Applying twice applies every file once, then nothing."""
    connection = await asyncpg.connect(empty_dsn)
    first = await apply_migrations(connection)
    second = await apply_migrations(connection)
    pending = await pending_versions(connection)
    await connection.close()
    assert first == migrate.known_versions()
    assert second == [] and pending == []


async def test_concurrent_runs_apply_each_file_once(empty_dsn: str) -> None:
    """Five replicas migrating at once apply each file exactly once, without error."""
    connections = [await asyncpg.connect(empty_dsn) for _ in range(5)]
    results = await asyncio.gather(*(apply_migrations(c) for c in connections))
    rows = await connections[0].fetch("SELECT version FROM schema_migrations")
    for connection in connections:
        await connection.close()
    applied = [version for result in results for version in result]
    assert sorted(applied) == migrate.known_versions()
    assert len(rows) == len(migrate.known_versions())


async def test_pending_lists_unapplied_files(empty_dsn: str) -> None:
    """A database never migrated reports every file pending."""
    connection = await asyncpg.connect(empty_dsn)
    pending = await pending_versions(connection)
    await connection.close()
    assert pending == migrate.known_versions()


@pytest.fixture
def no_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """An install whose package carries no SQL (tests is a package without any)."""
    monkeypatch.setattr(migrate, "MIGRATIONS_PACKAGE", "tests")


@pytest.mark.usefixtures("no_migrations")
async def test_no_migration_files_is_an_error_not_an_empty_schema(empty_dsn: str) -> None:
    """Without migration files, migrating refuses and touches nothing; check fails."""
    connection = await asyncpg.connect(empty_dsn)
    try:
        with pytest.raises(migrate.NoMigrationsError, match="no migration files"):
            await apply_migrations(connection)
        finding = await check_migrations(connection)
        created = await connection.fetchval("SELECT to_regclass('schema_migrations')")
    finally:
        await connection.close()
    assert not finding.ok and "no migration files" in finding.detail
    assert created is None


async def test_readyz_fails_without_migration_files(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz answers 503, saying why, when the installed code has no migration files."""
    monkeypatch.setattr(migrate, "MIGRATIONS_PACKAGE", "tests")
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and "no migration files" in ready.json()["migrations"]


async def test_readyz_fails_while_the_schema_is_behind(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """/readyz answers 503, naming the migration the database lacks."""
    version = migrate.known_versions()[-1]
    await db.execute("DELETE FROM schema_migrations WHERE version = $1", version)
    try:
        ready = await client.get("/readyz")
    finally:
        await db.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
    assert ready.status_code == 503 and ready.json()["pending_migrations"] == [version]
