"""`sync --once` and `untrack`; and `check`'s sync and freshness lines."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

import asyncpg

from service.cli.common import Finding, Progress, SubParsers, database, run
from service.config import Settings
from service.jira import client as jira
from service.model import InvalidKeyError, normalize_key
from service.storage import freshness, links, registration, tracking, watermarks
from service.sync import health
from service.sync.changed_since import RoundReport, Syncer
from service.sync.freshness import judge
from service.sync.wiring import jira_parts


def add_command(commands: SubParsers[argparse.ArgumentParser]) -> None:
    sync = commands.add_parser(
        "sync", help="ask Jira what changed in the tracked projects and store it, now"
    )
    sync.add_argument(
        "--once", action="store_true", required=True, help="one round over every project"
    )
    untrack = commands.add_parser(
        "untrack", help="stop tracking keys no project links (read once, or mistyped)"
    )
    untrack.add_argument("keys", nargs="+", metavar="KEY", type=_key)


def _key(text: str) -> str:
    try:
        return normalize_key(text)
    except InvalidKeyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        unknown = await unknown_keys(pool, sorted(report.unknown))
    print(summary(report, unknown), file=out)
    return 1 if report.failed else 0


async def unknown_keys(executor: asyncpg.Pool | asyncpg.Connection, projects: list[str]) -> str:
    """Who tracks the projects Jira does not know: each key, and the projects linking it."""
    if not projects:
        return ""
    keys = await tracking.keys_of_projects(executor, projects)
    linking = await links.linked_by(executor, [key for ks in keys.values() for key in ks])

    def named(key: str) -> str:
        by = linking.get(key)
        return f"{key} (linked by {', '.join(by)})" if by else f"{key} (read, not linked)"

    return "; ".join(
        f"{project}: {', '.join(named(key) for key in keys.get(project, [])[:10])}"
        for project in projects
    )


def summary(report: RoundReport, unknown: str = "") -> str:
    seconds = (report.finished or time.monotonic()) - report.started
    lines = [
        f"{len(report.synced)} projects synced in {seconds:.1f}s: {report.changes} changes "
        f"found in {report.pages} pages; {len(report.failed)} failed"
    ]
    lines += [f"  {project}: {reason}" for project, reason in sorted(report.failed.items())]
    if report.unknown:
        lines.append(
            f"warning: Jira does not know project(s) {', '.join(sorted(report.unknown))}; "
            f"{unknown}. Unlink the keys (a key Jira does not know is untracked when unlinked), "
            "or `jira-status-cache untrack KEY...` those only read"
        )
    return "\n".join(lines)


def untrack(settings: Settings, keys: list[str], out: TextIO = sys.stdout) -> int:
    return run(untrack_keys(settings, keys, out))


async def untrack_keys(settings: Settings, keys: list[str], out: TextIO) -> int:
    """Untrack the keys no project links; name the linked ones, which stay (exit 1)."""
    async with database(settings) as pool:
        gone = await tracking.untrack(pool, keys)
        linked = await links.linked_by(pool, keys)
    if gone:
        print(f"untracked: {', '.join(gone)}", file=out)
    for key, projects in sorted(linked.items()):
        print(f"{key}: still linked by {', '.join(projects)}; unlink it first", file=out)
    if left := sorted(set(keys) - set(gone) - set(linked)):
        print(f"not tracked: {', '.join(left)}", file=out)
    return 1 if linked else 0


async def check_sync(connection: asyncpg.Connection) -> Finding:
    """How the sync stands: projects verified, the oldest watermark, and any failing."""
    marks = await watermarks.watermarks(connection)
    if not marks:
        return Finding("sync", True, "no project synced yet")
    failing = [f"{m.project} ({m.error})" for m in marks if m.error and not m.unknown_to_jira]
    lags = await freshness.oldest_verified_seconds(connection)
    oldest = "never" if lags is None else f"{lags:.0f}s ago"
    detail = f"{len(marks)} projects, oldest verified {oldest}"
    if failing:
        return Finding("sync", False, f"{detail}; failing: {'; '.join(failing)}"[:500])
    if unknown := sorted(m.project for m in marks if m.unknown_to_jira):
        who = await unknown_keys(connection, unknown)
        return Finding("sync", True, f"{detail}; warning: Jira does not know {who}"[:500])
    return Finding("sync", True, detail)


async def check_freshness(connection: asyncpg.Connection, settings: Settings) -> Finding:
    """The /healthz freshness verdict in words, with Jira's clock measured now."""
    configured = bool(settings.webhook_secret)
    webhooks = await health.WebhookHealth(configured, settings.webhook_grace).judge_now(connection)
    clock = await watermarks.jira_clock(connection)
    if (measured := await _jira_clock(settings)) is not None:
        clock = dataclasses.replace(
            clock, skew=measured.skew, skew_error=measured.error, skew_measured_at=_now()
        )
    marks = await watermarks.watermarks(connection)
    verdict = judge(settings, marks, clock, webhooks, await watermarks.now(connection))
    # A skew is corrected by the sync, and an unknown project named: warnings, not failures.
    ok = verdict.state in ("ok", "off", "skewed", "unknown_projects")
    return Finding("freshness", ok, " | ".join(verdict.lines())[:800])


async def _jira_clock(settings: Settings) -> jira.ServerClock | None:
    if settings.jira is None:
        return None
    quick = dataclasses.replace(settings.jira, max_retries=0, timeout=10.0)
    try:
        async with jira.open_session(quick) as session:
            return await jira.JiraClient(session, quick).server_clock()
    except jira.JiraError:
        return None  # the jira line says what is wrong


def _now() -> datetime:
    return datetime.now(UTC)
