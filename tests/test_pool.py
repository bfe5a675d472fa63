"""The pool translates PostgreSQL being out of reach into one error, DatabaseUnavailableError."""

from __future__ import annotations

import asyncpg
import pytest

from service.storage.pool import DatabaseUnavailableError, Pool, open_pool


async def crash_while_held(pool: Pool) -> None:
    async with pool.acquire():
        raise asyncpg.InternalClientError("unexpected message from the server")


async def query_after_kill(pool: Pool, db: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        pid = await connection.fetchval("SELECT pg_backend_pid()")
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        await connection.fetchval("SELECT 1")


async def test_a_client_crash_while_held_is_database_unavailable(database_url: str) -> None:
    """asyncpg's InternalClientError (a crash mid-request) is DatabaseUnavailableError."""
    pool = await open_pool(database_url, 0, 1)
    try:
        with pytest.raises(DatabaseUnavailableError, match="InternalClientError"):
            await crash_while_held(pool)
    finally:
        await pool.close()


async def test_a_backend_killed_mid_request_is_database_unavailable(db, database_url) -> None:
    """A connection PostgreSQL terminates under a query is DatabaseUnavailableError."""
    pool = await open_pool(database_url, 0, 1)
    try:
        with pytest.raises(DatabaseUnavailableError):
            await query_after_kill(pool, db)
    finally:
        await pool.close()


async def test_other_errors_pass_through(database_url: str) -> None:
    """A mistake in SQL stays what it is: only PostgreSQL being unreachable is translated."""
    pool = await open_pool(database_url, 0, 1)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await pool.fetchval("SELECT * FROM no_such_table")
    finally:
        await pool.close()
