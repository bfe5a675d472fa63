"""Migrations: each file once, in order, safe when replicas start together."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from service.storage.migrate import apply_migrations, migration_files, pending_versions
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
    assert first == [path.stem for path in migration_files()]
    assert second == [] and pending == []


async def test_concurrent_runs_apply_each_file_once(empty_dsn: str) -> None:
    """Five replicas migrating at once apply each file exactly once, without error."""
    connections = [await asyncpg.connect(empty_dsn) for _ in range(5)]
    results = await asyncio.gather(*(apply_migrations(c) for c in connections))
    rows = await connections[0].fetch("SELECT version FROM schema_migrations")
    for connection in connections:
        await connection.close()
    applied = [version for result in results for version in result]
    assert sorted(applied) == [path.stem for path in migration_files()]
    assert len(rows) == len(migration_files())


async def test_pending_lists_unapplied_files(empty_dsn: str) -> None:
    """A database never migrated reports every file pending."""
    connection = await asyncpg.connect(empty_dsn)
    pending = await pending_versions(connection)
    await connection.close()
    assert pending == [path.stem for path in migration_files()]
