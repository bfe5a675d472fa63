"""The jira-status-cache command: serve, migrate, and the tools around them."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

import uvicorn

from service.cli import commands as tools
from service.cli import sync
from service.config import ConfigError, Settings
from service.logs import setup_logging
from service.storage.pool import open_pool, resolve_dsn

log = logging.getLogger("service")
# How long requests in flight may finish after SIGTERM before they are cancelled, so that
# one request stuck on Jira (a refresh has no READ_THROUGH_TIMEOUT) cannot hold shutdown,
# and the lifespan's cleanup, until SIGKILL. Longer than a read-through's 10 s, so that a
# reader gets its 503; within a 30 s stop window (compose's stop_grace_period, Kubernetes).
SHUTDOWN_GRACE_SECONDS = 15


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jira-status-cache",
        description="An always-fresh cache of Jira issue status. Settings come from the "
        "environment (see README.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="apply migrations, then serve the HTTP API")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    commands.add_parser(
        "simulate", help="run a local Jira simulator (see simulate --help)", add_help=False
    )
    tools.add_commands(commands)
    sync.add_command(commands)
    commands.add_parser(
        "demo", help="a live demo against the simulator (see demo --help)", add_help=False
    )
    return parser


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
        return tools.check(os.environ)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"jira-status-cache: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, secrets_of(settings))
    commands: dict[str, Callable[[Settings], int]] = {
        "serve": serve,
        "migrate": migrate,
        "refresh": lambda settings: tools.refresh(settings, args),
        "dead-letters": lambda settings: tools.dead_letters(settings, args),
        "sync": sync.sync_once,
    }
    try:
        return commands[args.command](settings)
    except ConfigError as exc:
        print(f"jira-status-cache: configuration error: {exc}", file=sys.stderr)
        return 2


def secrets_of(settings: Settings) -> list[str | None]:
    """Every configured secret, so that no log line can carry one."""
    return [
        settings.database_url,
        settings.jira_api_token,
        settings.jira_pat,
        settings.webhook_secret,
        settings.cron_secret,
        *settings.api_tokens,
    ]


def serve(settings: Settings) -> int:
    settings.check_serving()
    from service.http.app import create_app

    dsn = resolve_dsn(settings.database_url, settings.data_dir)
    app = create_app(dataclasses.replace(settings, database_url=dsn))
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
    # handler it found; a no-op handler lets a clean shutdown end in exit code 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    return 0


def migrate(settings: Settings) -> int:
    from service.storage.migrate import apply_migrations

    async def run() -> list[str]:
        pool = await open_pool(resolve_dsn(settings.database_url, settings.data_dir), 1, 1)
        try:
            async with pool.acquire() as connection:
                return await apply_migrations(connection)
        finally:
            await pool.close()

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0
