"""Operator commands beside serve: check the set-up, refresh from Jira now, list dead letters."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import asyncpg

from service.config import ConfigError, Settings
from service.http.errors import DATABASE_DOWN
from service.jira import client as jira
from service.model import InvalidProjectIdError, check_project_id
from service.storage import links, migrate, tracking
from service.storage import webhooks as deliveries
from service.storage.pool import open_pool, redact_dsn, resolve_dsn
from service.sync.refresh import Refresher, Report

SubParsers = argparse._SubParsersAction  # argparse names no public type for it
# Besides a server that is down: refused credentials, no such database, a malformed DSN,
# or an embedded server that would not start.
CONNECT_FAILED: tuple[type[BaseException], ...] = (
    *DATABASE_DOWN,
    asyncpg.PostgresError,
    ValueError,
    subprocess.SubprocessError,
)


class NotMigratedError(RuntimeError):
    def __init__(self, pending: list[str]) -> None:
        super().__init__(
            f"the database lacks migration(s) {', '.join(pending)}: "
            "run `jira-status-cache migrate` (or start serve) first"
        )


def add_commands(commands: SubParsers[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "check", help="check the settings, Jira's credentials and the database, a line each"
    )
    refresh = commands.add_parser(
        "refresh", help="read a project's linked issues, or every tracked one, from Jira now"
    )
    which = refresh.add_mutually_exclusive_group(required=True)
    which.add_argument("--project", metavar="ID", type=_project_id, help="a project's links")
    which.add_argument("--all", action="store_true", help="every tracked issue, in batches")
    letters = commands.add_parser(
        "dead-letters", help="list webhook deliveries that could not be used, newest first"
    )
    letters.add_argument("--limit", type=_limit, default=20, metavar="N", help="1 to 1000")
    letters.add_argument("--json", action="store_true", help="one JSON object a line, full body")


def _project_id(text: str) -> str:
    try:
        return check_project_id(text)
    except InvalidProjectIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 1000")
    return int(text)


def run(work: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; a database that is down or behind ends it with exit 1."""
    try:
        return asyncio.run(work)
    except NotMigratedError as exc:
        print(f"jira-status-cache: {exc}", file=sys.stderr)
    except DATABASE_DOWN as exc:
        print(f"jira-status-cache: cannot reach the database: {exc}", file=sys.stderr)
    return 1


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool over a database whose migrations are all applied."""
    dsn = await asyncio.to_thread(resolve_dsn, settings.database_url, settings.data_dir)
    pool = await open_pool(dsn, 1, 2)
    try:
        async with pool.acquire() as connection:
            if pending := await migrate.pending_versions(connection):
                raise NotMigratedError(pending)
        yield pool
    finally:
        await pool.close()


# check


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool | None  # None: not checked, since an earlier check failed
    detail: str

    def line(self) -> str:
        verdict = {True: "ok", False: "FAIL", None: "skip"}[self.ok]
        return f"{self.name:<11}{verdict:<6}{self.detail}"


def check(env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    findings = asyncio.run(run_checks(env))
    for finding in findings:
        print(finding.line(), file=out)
    return 0 if all(finding.ok for finding in findings) else 1


async def run_checks(env: Mapping[str, str]) -> list[Finding]:
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        skipped = [Finding(name, None, "needs valid settings") for name in ("jira", "database")]
        return [Finding("settings", False, str(exc)), *skipped]
    return [check_settings(settings), await check_jira(settings), *await check_db(settings)]


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
    if settings.jira_base_url is None:
        return Finding("jira", False, "JIRA_BASE_URL is not set")
    # One attempt, briefly: an operator waits for this answer.
    quick = dataclasses.replace(settings, jira_max_retries=0, jira_timeout=10.0)
    try:
        async with jira.open_session(quick) as session:
            me = await jira.JiraClient(session, quick).check_credentials()
    except (ConfigError, jira.JiraError) as exc:
        return Finding("jira", False, str(exc))
    who = me.get("displayName") or me.get("name") or me.get("accountId") or "an unnamed user"
    return Finding("jira", True, f"signed in to {settings.jira_base_url} as {who}")


async def check_db(settings: Settings) -> list[Finding]:
    where = "DATABASE_URL" if settings.database_url else f"embedded under {settings.data_dir}"
    try:
        dsn = await asyncio.to_thread(resolve_dsn, settings.database_url, settings.data_dir)
        connection = await asyncpg.connect(dsn, timeout=10)
    except CONNECT_FAILED as exc:
        failed = Finding("database", False, f"cannot connect ({where}): {exc}")
        return [failed, Finding("migrations", None, "needs the database")]
    try:
        version = await connection.fetchval("SHOW server_version")
        found = Finding("database", True, f"PostgreSQL {version} at {redact_dsn(dsn)}")
        migrations = await check_migrations(connection)
        if migrations.ok and "pending" not in migrations.detail:
            from service.cli.sync import check_sync  # it imports this module

            return [found, migrations, await check_sync(connection)]
        return [found, migrations]
    finally:
        await connection.close()


async def check_migrations(connection: asyncpg.Connection) -> Finding:
    known = {path.stem for path in migrate.migration_files()}
    try:
        done = await migrate.applied_versions(connection)
    except asyncpg.UndefinedTableError:
        done = set()
    if unknown := sorted(done - known):
        detail = f"applied by a newer release, unknown to this one: {', '.join(unknown)}"
        return Finding("migrations", False, detail)
    if pending := sorted(known - done):
        detail = f"{len(pending)} pending ({', '.join(pending)}); serve or migrate applies them"
        return Finding("migrations", True, detail)
    return Finding("migrations", True, f"all {len(known)} applied")


# refresh


class Progress:
    """A bar redrawn in place on a terminal; elsewhere, a plain line per batch."""

    WIDTH = 30

    def __init__(self, total: int, out: TextIO, unit: str = "keys") -> None:
        self.total = total
        self.unit = unit
        self.done = 0
        self.out = out
        self.live = out.isatty()

    def advance(self, count: int) -> None:
        self.done += count
        if self.live:
            filled = self.WIDTH * self.done // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.out.write(f"\r[{bar}] {self.done}/{self.total} {self.unit}")
        else:
            self.out.write(f"{self.done}/{self.total} {self.unit}\n")
        self.out.flush()

    def close(self) -> None:
        if self.live:
            self.out.write("\n")


def refresh(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    if settings.jira_base_url is None:
        raise ConfigError("JIRA_BASE_URL", "required by refresh (e.g. https://acme.atlassian.net)")
    return run(refresh_keys(settings, args.project, out))


async def refresh_keys(settings: Settings, project: str | None, out: TextIO) -> int:
    """Refresh a project's links (or every tracked key), then print a summary."""
    async with database(settings) as pool, jira.open_session(settings) as session:
        keys = await (links.linked_keys(pool, project) if project else tracking.tracked_keys(pool))
        if not keys:
            print(
                f"project {project} links no issue" if project else "nothing is tracked", file=out
            )
            return 0
        refresher = Refresher(pool, jira.JiraClient(session, settings), settings.cache_ttl)
        total = Report()
        problem = await refresh_batches(refresher, keys, settings, total, Progress(len(keys), out))
    if problem is not None:
        print(f"stopped: {problem}", file=out)
    print(summary(total), file=out)
    return 1 if problem or total.count("failed") else 0


async def refresh_batches(
    refresher: Refresher, keys: list[str], settings: Settings, total: Report, progress: Progress
) -> jira.JiraError | None:
    """Refresh batch by batch into `total`; answer the Jira error that stopped it, if any."""
    # One batch is what the client reads at once: a bulk call per slot.
    size = settings.jira_batch_size * settings.jira_max_concurrency
    try:
        for start in range(0, len(keys), size):
            batch = keys[start : start + size]
            report = await refresher.refresh(batch, "refresh")
            # Fresh now: the poller need not read these again for another TTL.
            fresh = report.keys("refreshed", "unchanged")
            await tracking.reschedule(refresher.pool, fresh, settings.cache_ttl)
            total.merge(report)
            progress.advance(len(batch))
    except jira.JiraError as exc:
        return exc  # what was read before is stored, and the summary counts it
    finally:
        total.finished = time.monotonic()
        progress.close()
    return None


def summary(report: Report) -> str:
    seconds = (report.finished or time.monotonic()) - report.started
    lines = [
        f"{len(report.results)} keys in {seconds:.1f}s: {report.count('refreshed')} refreshed, "
        f"{report.count('unchanged')} unchanged, {report.count('not_found')} not found in Jira, "
        f"{report.count('failed')} failed"
    ]
    lines += [f"  {key}: {report.results[key].error}" for key in report.keys("failed")[:20]]
    return "\n".join(lines)


# dead-letters


def dead_letters(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    return run(print_dead_letters(settings, args.limit, args.json, out))


async def print_dead_letters(settings: Settings, limit: int, as_json: bool, out: TextIO) -> int:
    async with database(settings) as pool:
        letters = await deliveries.list_dead_letters(pool, limit)
    if not letters and not as_json:
        print("no dead letters", file=out)
    for letter in letters:
        print(render_json(letter) if as_json else render_letter(letter), file=out)
    return 0


def render_letter(letter: deliveries.DeadLetter) -> str:
    received = letter.received_at.isoformat(timespec="seconds")
    body = " ".join(letter.body.split())
    body = body if len(body) <= 160 else body[:157] + "..."
    return (
        f"#{letter.id}  {received}  delivery {letter.delivery_id or '(no identifier)'}\n"
        f"    error: {letter.error}\n"
        f"    body:  {body}"
    )


def render_json(letter: deliveries.DeadLetter) -> str:
    fields = dataclasses.asdict(letter) | {"received_at": letter.received_at.isoformat()}
    return json.dumps(fields)
