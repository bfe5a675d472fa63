"""`jira-status-cache changes`: the change log in a terminal, one line per change.

It reads PostgreSQL directly, with the same gap-free reader and the same LISTEN-woken feed
as the HTTP stream: an operator on a host that has DATABASE_URL needs no API token, and
it works while no `serve` is up (e.g. to watch a sync or a migration write).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any, TextIO

from service.cli import common
from service.cli.display import printable
from service.config import Settings
from service.model import render_time
from service.storage import changes
from service.storage.changes import Change, Filter
from service.storage.embedded import resolve_dsn
from service.sync import feed


def add_command(subparsers: common.SubParsers[argparse.ArgumentParser]) -> None:
    found = subparsers.add_parser(
        "changes", help="print the change log, a line per change; --follow waits for more"
    )
    found.add_argument("--follow", action="store_true", help="keep printing new changes")
    found.add_argument("--project", metavar="ID", type=common.project_id, help="its links only")
    found.add_argument(
        "--from",
        dest="start",
        choices=("beginning", "now"),
        help="where to start (default: beginning, or now with --follow)",
    )


def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    start = args.start or ("now" if args.follow else "beginning")
    return common.run(show(settings, Filter(project_id=args.project), start, args.follow, out))


async def show(settings: Settings, only: Filter, start: str, follow: bool, out: TextIO) -> int:
    async with common.database(settings) as pool:
        begin = changes.first_cursor if start == "beginning" else changes.current_cursor
        after = await begin(pool)
        if not follow:
            while (page := await changes.read_changes(pool, after, only, 1000)).changes:
                for change in page.changes:
                    print(line(change), file=out, flush=True)
                after = page.next
            return 0
        dsn = settings.database_listen_url or resolve_dsn(settings.database_url, settings.data_dir)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with feed.following(pool, dsn) as follower:
            async for change in feed.follow(follower, after, only, stop):
                print(line(change), file=out, flush=True)
    return 0


def line(change: Change) -> str:
    """`time  KEY  source  field: old -> new; ...`"""
    moves = "; ".join(
        f"{name}: {_brief(old)} -> {_brief(new)}" for name, (old, new) in change.fields.items()
    )
    when = render_time(change.at)
    return f"{when}  {change.cached.issue.key:<12} {change.source:<8} {moves}"


def _brief(value: Any) -> str:
    if isinstance(value, dict):
        # A status by its name and category, an assignee by their display name.
        if "category" in value:
            return printable(f"{value['name']} ({value['category']})")
        return printable(str(value.get("display_name")))
    return "-" if value is None else repr(value) if isinstance(value, str) else str(value)
