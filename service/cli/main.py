"""The jira-status-cache command: serve, migrate, and the tools around them."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence

import uvicorn
from starlette.types import ASGIApp

from service import config
from service.cli import changes, commands, sync, webhook
from service.config import ConfigError, Settings
from service.logs import setup_logging
from service.storage import migrate as migrations
from service.storage.pool import open_pool, resolve_dsn

log = logging.getLogger("service")
# How long requests in flight may finish after SIGTERM before they are cancelled, so that
# one request stuck on Jira (a refresh has no READ_THROUGH_TIMEOUT) cannot hold shutdown,
# and the lifespan's cleanup, until SIGKILL. Longer than a read-through's 10 s, so that a
# reader gets its 503; within a 30 s stop window (compose's stop_grace_period, Kubernetes).
SHUTDOWN_GRACE_SECONDS = 15
# With WEB_CONCURRENCY above 1, each worker process builds its app through this factory.
WORKER_APP = "service.cli.main:app_from_env"
# What migrate and dead-letters use of the settings; the others read them all.
DATABASE_SETTINGS = ("DATABASE_URL", "DATA_DIR", "LOG_LEVEL", "LOG_FORMAT")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jira-status-cache",
        description="An always-fresh cache of Jira issue status. Settings come from the "
        "environment (see README.md).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers.add_parser("serve", help="apply migrations, then serve the HTTP API")
    subparsers.add_parser("migrate", help="apply pending database migrations and exit")
    subparsers.add_parser(
        "simulate", help="run a local Jira simulator (see simulate --help)", add_help=False
    )
    commands.add_commands(subparsers)
    webhook.add_command(subparsers)
    changes.add_command(subparsers)
    sync.add_command(subparsers)
    subparsers.add_parser(
        "demo", help="a live demo against the simulator (see demo --help)", add_help=False
    )
    for name, command in subparsers.choices.items():
        if command.add_help:
            command.formatter_class = argparse.RawDescriptionHelpFormatter
            command.epilog = settings_epilog(
                DATABASE_SETTINGS if name in {"migrate", "dead-letters"} else setting_names()
            )
    return parser


def setting_names() -> list[str]:
    """Every environment variable Settings.from_env reads, in its order."""
    return [variable.name for variable in config.variables()]


def settings_epilog(names: Sequence[str]) -> str:
    listed = textwrap.fill(", ".join(names), width=78, initial_indent="  ", subsequent_indent="  ")
    return f"settings read from the environment (README.md, Configuration):\n{listed}"


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "simulate":
        import jira_simulator as simulator

        return simulator.main(rest)
    if args.command == "demo":
        import cache_demo as demo

        return demo.main(rest)
    if rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "check":
        # check reports a bad setting as one of its findings, and goes on to the others.
        return commands.check(os.environ)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"jira-status-cache: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, settings.secrets())
    run: dict[str, Callable[[Settings], int]] = {
        "serve": serve,
        "migrate": migrate,
        "refresh": lambda settings: commands.refresh(settings, args),
        "dead-letters": lambda settings: commands.dead_letters(settings, args),
        "webhook": lambda settings: webhook.main(settings, args),
        "changes": lambda settings: changes.run(settings, args),
        "sync": sync.sync_once,
        "untrack": lambda settings: sync.untrack(settings, args.keys),
    }
    try:
        return run[args.command](settings)
    except ConfigError as exc:
        print(f"jira-status-cache: configuration error: {exc}", file=sys.stderr)
        return 2
    except migrations.NoMigrationsError as exc:
        print(f"jira-status-cache: {exc}", file=sys.stderr)
        return 1


def serve(settings: Settings) -> int:
    settings.check_serving()
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
    log.info("listening", extra={"url": listen_url(settings), "workers": workers})
    uvicorn.run(
        serving_app(settings) if workers == 1 else WORKER_APP,
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
    return 0


def listen_url(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def serving_app(settings: Settings) -> ASGIApp:
    from service.http.app import create_app
    from service.http.cutoff import ShutdownAnswer

    return ShutdownAnswer(create_app(settings))


def app_from_env() -> ASGIApp:
    """A worker's app: its settings read from the environment the parent prepared."""
    settings = Settings.from_env(os.environ)
    setup_logging(settings.log_level, settings.log_format, settings.secrets())
    return serving_app(settings)


def apply_pending(settings: Settings) -> list[str]:
    async def run() -> list[str]:
        pool = await open_pool(resolve_dsn(settings.database_url, settings.data_dir), 1, 1)
        try:
            async with pool.acquire() as connection:
                return await migrations.apply_migrations(connection)
        finally:
            await pool.close()

    return asyncio.run(run())


def migrate(settings: Settings) -> int:
    applied = apply_pending(settings)
    latest = migrations.known_versions()[-1]
    done = ", ".join(applied) or "none pending"
    print(f"applied {len(applied)} migration(s): {done}; the schema is at {latest}")
    return 0
