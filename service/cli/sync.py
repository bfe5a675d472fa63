"""`sync --once`: one changed-since round now, with progress and a summary; and its check line."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

import asyncpg

from service.cli.common import Finding, Progress, SubParsers, database, run
from service.config import Settings
from service.storage import gauges, registration, watermarks
from service.sync.catchup import RoundReport, Syncer
from service.sync.parts import jira_parts


def add_command(commands: SubParsers[argparse.ArgumentParser]) -> None:
    sync = commands.add_parser(
        "sync", help="ask Jira what changed in the tracked projects and store it, now"
    )
    sync.add_argument(
        "--once", action="store_true", required=True, help="one round over every project"
    )


def sync_once(settings: Settings, out: TextIO = sys.stdout) -> int:
    settings.require_jira("sync")
    return run(sync_round(settings, out))


async def sync_round(settings: Settings, out: TextIO) -> int:
    async with database(settings) as pool, jira_parts(settings, pool) as parts:
        total = len(await registration.tracked_projects(pool))
        if not total or parts.client is None:
            print("nothing is tracked", file=out)
            return 0
        progress = Progress(total, out, "projects")
        syncer = Syncer(pool, parts.client, settings)
        try:
            report = await syncer.sync(lambda done: progress.advance(done - progress.done))
        finally:
            progress.close()
    print(summary(report), file=out)
    return 1 if report.failed else 0


def summary(report: RoundReport) -> str:
    seconds = (report.finished or time.monotonic()) - report.started
    lines = [
        f"{len(report.synced)} projects synced in {seconds:.1f}s: {report.changes} changes "
        f"found in {report.pages} pages; {len(report.failed)} failed"
    ]
    lines += [f"  {project}: {reason}" for project, reason in sorted(report.failed.items())]
    return "\n".join(lines)


async def check_sync(connection: asyncpg.Connection) -> Finding:
    """How the sync stands: projects verified, the oldest watermark, and any failing."""
    marks = await watermarks.watermarks(connection)
    if not marks:
        return Finding("sync", True, "no project synced yet")
    failing = [f"{mark.project} ({mark.error})" for mark in marks if mark.error]
    age = await gauges.oldest_verified_age(connection)
    oldest = "never" if age is None else f"{age:.0f}s ago"
    detail = f"{len(marks)} projects, oldest verified {oldest}"
    if failing:
        return Finding("sync", False, f"{detail}; failing: {'; '.join(failing)}"[:500])
    return Finding("sync", True, detail)
