"""The jira-status-cache command: serve, migrate, and the tools around them."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from service import config
from service.cli import changes, clients, commands, sync, usage, webhook
from service.cli import serve as serving
from service.config import ConfigError, Settings
from service.logs import setup_logging
from service.storage import migrate as migrations

log = logging.getLogger("service")
TOOLS = {"simulate": "jira_simulator", "demo": "cache_demo"}


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
    clients.add_command(subparsers)
    subparsers.add_parser(
        "demo", help="a live demo against the simulator (see demo --help)", add_help=False
    )
    usage.describe(subparsers)
    return parser


def setting_names() -> list[str]:
    """Every environment variable Settings.from_env reads, in its order."""
    return [variable.name for variable in config.variables()]


def run_tool(command: str, argv: list[str]) -> int:
    """simulate and demo: development tools, installed from a checkout, not in the image."""
    try:
        tool = importlib.import_module(TOOLS[command])
    except ImportError:
        print(
            f"jira-status-cache: {command} is not installed here: it comes with a source "
            "checkout (pip install . there), not with the image",
            file=sys.stderr,
        )
        return 2
    code: int = tool.main(argv)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if args.command in {"simulate", "demo"}:
        return run_tool(args.command, rest)
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
        "serve": serving.serve,
        "migrate": serving.migrate,
        "refresh": lambda settings: commands.refresh(settings, args),
        "dead-letters": lambda settings: commands.dead_letters(settings, args),
        "webhook": lambda settings: webhook.main(settings, args),
        "changes": lambda settings: changes.run(settings, args),
        "sync": sync.sync_once,
        "client": lambda settings: clients.run(settings, args),
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
    except serving.PortInUseError as exc:
        log.error(str(exc))
        return 1
