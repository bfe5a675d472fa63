"""Operator commands beside serve: check the set-up, refresh from Jira now, list dead letters."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Mapping
from typing import TextIO

import asyncpg
import msgspec

from service.cli.common import (
    CONNECT_FAILED,
    Finding,
    Progress,
    SubParsers,
    database,
    project_id,
    run,
)
from service.cli.display import printable
from service.cli.sync import check_freshness, check_sync
from service.cli.webhook import check_webhook
from service.config import ConfigError, Settings
from service.jira import client as jira
from service.shapes import shape_letter, shape_report
from service.storage import inbox, links, migrate, tracking
from service.storage.embedded import resolve_dsn
from service.storage.inbox import WHOLE
from service.storage.pool import redact_dsn
from service.sync.refresh import Refresher, Report
from service.sync.wiring import jira_parts


def add_commands(commands: SubParsers[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "check", help="check the settings, Jira's credentials and the database, a line each"
    )
    refresh = commands.add_parser(
        "refresh", help="read a project's linked issues, or every tracked one, from Jira now"
    )
    which = refresh.add_mutually_exclusive_group(required=True)
    which.add_argument("--project", metavar="ID", type=project_id, help="a project's links")
    which.add_argument("--all", action="store_true", help="every tracked issue, in batches")
    letters = commands.add_parser(
        "dead-letters", help="list webhook deliveries that could not be used, newest first"
    )
    letters.add_argument("--limit", type=_limit, default=20, metavar="N", help="1 to 1000")
    letters.add_argument("--json", action="store_true", help="one JSON object a line, full body")


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 1000")
    return int(text)


# check


def check(env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    findings = asyncio.run(run_checks(env))
    for finding in findings:
        print(finding.line(), file=out)
    return 0 if all(finding.ok for finding in findings) else 1


async def run_checks(env: Mapping[str, str]) -> list[Finding]:
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        names = ("jira", "database", "webhook")
        skipped = [Finding(name, None, "needs valid settings") for name in names]
        return [Finding("settings", False, str(exc)), *skipped]
    found = [check_settings(settings), await check_jira(settings), *await check_db(settings)]
    return [*found, await check_webhook(settings, found[1].ok)]


def check_settings(settings: Settings) -> Finding:
    try:
        settings.check_serving()
    except ConfigError as exc:
        return Finding("settings", False, str(exc))
    tokens = f"{len(settings.api_tokens)} API token(s)" if settings.api_tokens else "no API tokens"
    hooks = "on" if settings.webhook_secret else "off (JIRA_WEBHOOK_SECRET is unset)"
    detail = f"serve listens on {settings.host}:{settings.port}; {tokens}; webhooks {hooks}"
    return Finding("settings", True, detail)


async def check_jira(settings: Settings) -> Finding:
    if settings.jira is None:
        return Finding("jira", False, "JIRA_BASE_URL is not set")
    # One attempt, briefly: an operator waits for this answer.
    quick = dataclasses.replace(settings.jira, max_retries=0, timeout=10.0)
    try:
        async with jira.open_session(quick) as session:
            me = await jira.JiraClient(session, quick).check_credentials()
    except jira.JiraError as exc:
        return Finding("jira", False, str(exc))
    who = me.get("displayName") or me.get("name") or me.get("accountId") or "an unnamed user"
    return Finding("jira", True, f"signed in to {quick.base_url} as {who}")


async def check_db(settings: Settings) -> list[Finding]:
    where = "DATABASE_URL" if settings.database_url else f"embedded under {settings.data_dir}"
    try:
        dsn = await asyncio.to_thread(resolve_dsn, settings.database_url, settings.data_dir)
        # Through a transaction pooler, named statements would miss on the next transaction.
        cache = 0 if settings.database_pooler == "transaction" else 100
        connection = await asyncpg.connect(dsn, timeout=10, statement_cache_size=cache)
    except CONNECT_FAILED as exc:
        failed = Finding("database", False, f"cannot connect ({where}): {exc}")
        return [failed, Finding("migrations", None, "needs the database")]
    try:
        version = await connection.fetchval("SHOW server_version")
        found = Finding("database", True, f"PostgreSQL {version} at {redact_dsn(dsn)}")
        migrations = await check_migrations(connection)
        if migrations.ok and "pending" not in migrations.detail:
            synced = await check_sync(connection)
            return [found, migrations, synced, await check_freshness(connection, settings)]
        return [found, migrations]
    finally:
        await connection.close()


async def check_migrations(connection: asyncpg.Connection) -> Finding:
    try:
        known = set(migrate.known_versions())
    except migrate.NoMigrationsError as exc:
        return Finding("migrations", False, str(exc))
    done = await migrate.applied_versions(connection)
    if unknown := sorted(done - known):
        detail = f"applied by a newer release, unknown to this one: {', '.join(unknown)}"
        return Finding("migrations", False, detail)
    if pending := sorted(known - done):
        detail = f"the schema is behind the code, {len(pending)} pending ({', '.join(pending)}): "
        return Finding("migrations", False, detail + "run migrate (serve also applies them)")
    return Finding("migrations", True, f"all {len(known)} applied")


# refresh


def refresh(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    return run(refresh_keys(settings, args.project, out))


async def refresh_keys(settings: Settings, project: str | None, out: TextIO) -> int:
    """Refresh a project's links (or every tracked key), then print a summary."""
    jira_settings = settings.require_jira("refresh")
    async with database(settings) as pool, jira_parts(settings, pool) as parts:
        keys = await (links.linked_keys(pool, project) if project else tracking.tracked_keys(pool))
        if not keys:
            print(
                f"project {project} links no issue" if project else "nothing is tracked", file=out
            )
            return 0
        if parts.refresher is None:
            raise ConfigError("JIRA_BASE_URL", "required by refresh")
        total = Report()
        # One batch is what the client reads at once: a bulk call per slot.
        size = jira_settings.batch_size * jira_settings.max_concurrency
        problem = await refresh_batches(
            parts.refresher, keys, size, settings, total, Progress(len(keys), out)
        )
    if problem is not None:
        print(f"stopped: {problem}", file=out)
    if total.results or problem is None:  # "0 keys in 0.0s" after a refusal says nothing
        print(summary(total), file=out)
    return 1 if problem or total.count("failed") else 0


async def refresh_batches(
    refresher: Refresher,
    keys: list[str],
    size: int,
    settings: Settings,
    total: Report,
    progress: Progress,
) -> jira.JiraError | None:
    """Refresh `size` keys at a time into `total`; answer the Jira error that stopped it, if any."""
    try:
        for start in range(0, len(keys), size):
            batch = keys[start : start + size]
            report = await refresher.refresh(batch, "refresh")
            total.merge(report)
            progress.advance(len(batch))
    except jira.JiraError as exc:
        return exc  # what was read before is stored, and the summary counts it
    finally:
        total.finished = time.monotonic()
        progress.close()
    return None


def summary(report: Report) -> str:
    shaped = shape_report(report, complete=True)
    lines = [
        f"{shaped.requested} keys in {shaped.duration_ms / 1000:.1f}s: {shaped.refreshed} "
        f"refreshed, {shaped.unchanged} unchanged, {shaped.not_found} not found in Jira, "
        f"{shaped.failed} failed"
    ]
    lines += [f"  {failure.key}: {failure.error}" for failure in shaped.errors[:20]]
    return "\n".join(lines)


# dead-letters


def dead_letters(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    return run(print_dead_letters(settings, args.limit, args.json, out))


async def print_dead_letters(settings: Settings, limit: int, as_json: bool, out: TextIO) -> int:
    async with database(settings) as pool:
        # --json gives each body whole; the listing shows 160 characters of it.
        letters = await inbox.list_dead_letters(pool, limit, preview=WHOLE if as_json else 200)
    if not letters and not as_json:
        print("no dead letters", file=out)
    for letter in letters:
        print(render_json(letter) if as_json else render_letter(letter), file=out)
    return 0


def render_letter(letter: inbox.DeadLetter) -> str:
    shaped = shape_letter(letter)
    body = printable(" ".join(shaped.body.split()))
    body = body if len(body) <= 160 and not shaped.truncated else body[:157] + "..."
    delivery = printable(shaped.delivery_id or "(no identifier)")
    return (
        f"#{shaped.id}  {shaped.received_at}  delivery {delivery}\n"
        f"    error: {printable(shaped.error)}\n"
        f"    body:  {body}"
    )


def render_json(letter: inbox.DeadLetter) -> str:
    return msgspec.json.encode(shape_letter(letter)).decode()
