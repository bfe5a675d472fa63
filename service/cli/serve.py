"""`serve`: bind the port first, then the database and migrations, then the HTTP API."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket

import uvicorn
from starlette.types import ASGIApp
from uvicorn.supervisors import Multiprocess

from service import heap
from service.config import Settings
from service.http import server as http_server
from service.logs import setup_logging
from service.storage import migrate as migrations
from service.storage.embedded import resolve_dsn
from service.storage.pool import connect_session

log = logging.getLogger("service")
# How long requests in flight may finish after SIGTERM before they are cancelled, so that
# one request stuck on Jira (a refresh has no READ_THROUGH_TIMEOUT) cannot hold shutdown,
# and the lifespan's cleanup, until SIGKILL. Longer than a read-through's 10 s, so that a
# reader gets its 503; within a 30 s stop window (compose's stop_grace_period, Kubernetes).
SHUTDOWN_GRACE_SECONDS = 15
# With WEB_CONCURRENCY above 1, each worker process builds its app through this factory.
WORKER_APP = "service.cli.serve:app_from_env"
STARTUP_FAILURE = 3  # as uvicorn: the lifespan did not start


class PortInUseError(OSError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot listen on {url}: {reason} (PORT and HOST choose another)")


class _Server(uvicorn.Server):
    """uvicorn's server, saying `listening` once it accepts connections, not before."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            url = listen_url(self.config.host, self.config.port)
            log.info("listening", extra={"url": url, "workers": self.config.workers})


def serve(settings: Settings) -> int:
    settings.check_serving()
    # First: a port in use is one clear line, before PostgreSQL starts or migrations run.
    sock = bind(settings.host, settings.port)
    # Resolved once, here: with workers, the parent starts the embedded PostgreSQL, and the
    # workers, reading their settings from the environment, find it in DATABASE_URL.
    settings = dataclasses.replace(
        settings, database_url=resolve_dsn(settings.database_url, settings.data_dir)
    )
    workers = settings.web_concurrency
    if workers > 1:
        os.environ["DATABASE_URL"] = str(settings.database_url)
        # Once, before the workers: a broken install fails here, not in a restart loop.
        applied = apply_pending(settings)
        log.info("migrations applied", extra={"versions": applied})
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
    # handler it found; a no-op handler lets a clean shutdown end in exit code 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    config = http_server.config(
        serving_app(settings) if workers == 1 else WORKER_APP,
        settings,
        factory=workers > 1,
        workers=workers,
        host=settings.host,
        port=settings.port,
        # None: uvicorn keeps the logging set up here (JSON, redacted), adding no handler.
        log_config=None,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    if workers > 1:
        # Each worker accepts on the socket bound here once its lifespan has started.
        url = listen_url(settings.host, settings.port)
        log.info("listening", extra={"url": url, "workers": workers})
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server = _Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound as uvicorn would bind it; refused: PortInUseError."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn does: connections of an earlier run in TIME_WAIT do not hold the port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(listen_url(host, port), exc.strerror or str(exc)) from None
    sock.set_inheritable(True)
    return sock


def listen_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serving_app(settings: Settings) -> ASGIApp:
    from service.http.app import create_app
    from service.http.cutoff import ShutdownAnswer

    return ShutdownAnswer(create_app(settings, started=heap.freeze))


def app_from_env() -> ASGIApp:
    """A worker's app: its settings read from the environment the parent prepared."""
    settings = Settings.from_env(os.environ)
    setup_logging(settings.log_level, settings.log_format, settings.secrets())
    return serving_app(settings)


def apply_pending(settings: Settings) -> list[str]:
    async def run() -> list[str]:
        # A session of its own (DATABASE_LISTEN_URL): the migrations' lock is a session's.
        dsn = settings.database_listen_url or resolve_dsn(settings.database_url, settings.data_dir)
        connection = await connect_session(dsn)
        try:
            return await migrations.apply_migrations(connection)
        finally:
            await connection.close()

    return asyncio.run(run())


def migrate(settings: Settings) -> int:
    applied = apply_pending(settings)
    latest = migrations.known_versions()[-1]
    done = ", ".join(applied) or "none pending"
    print(f"applied {len(applied)} migration(s): {done}; the schema is at {latest}")
    return 0
