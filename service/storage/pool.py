"""The connection pool, and what PostgreSQL being out of reach looks like from it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

log = logging.getLogger(__name__)

# What a lost, refused or crashed PostgreSQL connection looks like from asyncpg and the OS.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


class DatabaseUnavailableError(ConnectionError):
    """PostgreSQL cannot be reached, or went away mid-query; retry later."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"PostgreSQL is unreachable: {reason(cause)}")


def reason(cause: BaseException) -> str:
    """Why a connection failed, in the words of whoever refused it: a server, or a pooler
    such as PgBouncer, answers a refusal as an error message with an SQLSTATE."""
    if isinstance(cause, asyncpg.PostgresError):
        return f"the server (or a pooler in front of it) said: {cause} (SQLSTATE {cause.sqlstate})"
    return f"{type(cause).__name__}: {cause}"


class _Acquire(PoolAcquireContext):
    """Borrow a connection; whatever fails to reach PostgreSQL, then or while it is held,
    raises DatabaseUnavailableError."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        try:
            return await super().__aenter__()
        except UNREACHABLE as exc:
            raise DatabaseUnavailableError(exc) from exc

    async def __aexit__(self, *exc: object) -> None:
        error = exc[1] if len(exc) > 1 else None
        try:
            await super().__aexit__(*exc)
        except UNREACHABLE as exc:
            raise DatabaseUnavailableError(exc) from exc
        if isinstance(error, UNREACHABLE) and not isinstance(error, DatabaseUnavailableError):
            raise DatabaseUnavailableError(error) from error


class Pool(asyncpg.Pool):
    """asyncpg's pool, whose every query and borrowed connection translate PostgreSQL
    being unreachable into DatabaseUnavailableError (the pool's own methods all acquire).

    Every acquire, including those inside pool.fetch(), waits a bounded time: without a
    bound, 40 clients scraping a slow query held webhooks queued for seconds (p99 10 ms ->
    1,286 ms, measured); a wait past it is unavailability too (503 database_unavailable).
    """

    __slots__ = ("acquire_timeout",)

    def __init__(self, dsn: str, acquire_timeout: float | None, **options: Any) -> None:
        super().__init__(dsn, **options)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        return _Acquire(self, self.acquire_timeout if timeout is None else timeout)


# Whatever runs a query: a pool, a connection, or a connection borrowed from a pool.
Executor = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
Connection = asyncpg.Connection | PoolConnectionProxy


async def affected(executor: Executor, sql: str, *args: object) -> int:
    """Run a statement; answer how many rows it touched, from its command tag (`DELETE 3`)."""
    status: str = await executor.execute(sql, *args)
    return int(status.split()[-1])


# Plan each prepared statement once, not per call: re-planning the webhook's one-statement
# write cost PostgreSQL 610-665 us per delivery against 220-245 us with a generic plan
# (measured). Every statement here is written to stay linear under a generic plan: index
# lookups per row, no joins between CTEs whose sizes a generic plan cannot know. Set per
# session, not as a startup parameter: PgBouncer refuses startup parameters it does not know.
PLAN_ONCE = "SET plan_cache_mode = force_generic_plan"
# Our connections in pg_stat_activity (PgBouncer passes application_name on, too).
APPLICATION = "jira-status-cache"


async def plan_once(connection: asyncpg.Connection) -> None:
    await connection.execute(PLAN_ONCE)


async def keep_session(connection: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release: a round trip per query, 17% of a read's CPU.

    We leave no session state behind but the plan_cache_mode every connection of ours sets
    (no LISTEN, cursors, or advisory lock outside the migration's own unlock), and asyncpg
    still rolls back any open transaction itself.
    """


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, fit for a log line."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


async def open_pool(
    dsn: str,
    min_size: int = 0,
    max_size: int = 10,
    acquire_timeout: float | None = None,
    pooled: bool = False,
) -> Pool:
    """A pool over `dsn`; `pooled`: the DSN goes through a transaction pooler (PgBouncer).

    Through a transaction pooler consecutive transactions may run on different server
    connections: a named prepared statement (asyncpg's statement cache) prepared on one is
    unknown on the next, and a session setting would leak to other clients. So there, no
    statement cache and no SET; asyncpg's unnamed statements still bind in one round trip.
    """
    # min_size 0: connections open on demand and idle ones stay for 5 minutes. A floor
    # would have asyncpg reconnect in a background task that, with PostgreSQL down, ends
    # in exceptions nobody retrieves. The options are create_pool's defaults but these.
    pool = Pool(
        dsn,
        acquire_timeout,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=30,
        reset=keep_session,
        init=None if pooled else plan_once,
        server_settings={"application_name": APPLICATION},
        statement_cache_size=0 if pooled else 100,
    )
    try:
        await pool
    except UNREACHABLE as exc:
        raise DatabaseUnavailableError(exc) from exc
    return pool


async def connect_session(
    dsn: str, wait: float = 10.0, name: str = "migrate"
) -> asyncpg.Connection:
    """One connection of its own, for what needs a session: LISTEN, the migrations' lock.

    `dsn` must reach PostgreSQL directly (DATABASE_LISTEN_URL), not a transaction pooler.
    `name` tells it apart in pg_stat_activity (application_name `jira-status-cache <name>`).
    """
    named = {"application_name": f"{APPLICATION} {name}"}
    try:
        connection: asyncpg.Connection = await asyncpg.connect(
            dsn, timeout=wait, server_settings=named
        )
    except UNREACHABLE as exc:
        raise DatabaseUnavailableError(exc) from exc
    return connection
