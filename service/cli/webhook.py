"""`webhook install | status | uninstall`: our webhook in Jira, through its admin API or by hand."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

import asyncpg

from service.cli import display
from service.cli.common import CONNECT_FAILED, Finding, SubParsers, database, run
from service.cli.display import jira_of
from service.config import ConfigError, Settings
from service.http.app import WEBHOOK_PATH
from service.jira import client as jira
from service.jira import webhooks
from service.storage import registration
from service.storage.embedded import resolve_dsn
from service.sync import registrar


def add_command(commands: SubParsers[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("webhook", help="register our webhook in Jira, show or remove it")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install", help="register our webhook through Jira's admin API, or update it"
    )
    install.add_argument(
        "--url", required=True, type=_url, help=f"e.g. https://cache{WEBHOOK_PATH}"
    )
    install.add_argument(
        "--all-projects", action="store_true", help="every Jira project, not the tracked ones"
    )
    install.add_argument(
        "--no-manage",
        action="store_true",
        help="leave the filter as set now; by default serve keeps it on the tracked projects",
    )
    status = actions.add_parser("status", help="whether ours is registered, and the last delivery")
    uninstall = actions.add_parser("uninstall", help="remove our webhook from Jira")
    for action in (status, uninstall):
        action.add_argument("--url", type=_url, help="ours; default: the one install registered")
    for action in (install, status, uninstall):
        action.add_argument(
            "--show-secret",
            action="store_true",
            help=f"print the secret instead of {display.PLACEHOLDER}",
        )


def _url(text: str) -> str:
    if not re.match(r"^https?://[^/?#]+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    if "?" in text or "#" in text:
        raise argparse.ArgumentTypeError(
            "give the URL without a query: the secret comes from JIRA_WEBHOOK_SECRET"
        )
    return webhooks.endpoint(text)


def main(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    jira_of(settings)
    if args.action == "install":
        if not settings.webhook_secret:
            raise ConfigError("JIRA_WEBHOOK_SECRET", "required: Jira proves its deliveries with it")
        manage = not args.no_manage
        return run(install(settings, args.url, args.all_projects, args.show_secret, out, manage))
    if args.action == "status":
        return run(status(settings, args.url, args.show_secret, out))
    return run(uninstall(settings, args.url, args.show_secret, out))


# install


async def install(
    settings: Settings,
    url: str,
    all_projects: bool,
    show_secret: bool,
    out: TextIO,
    manage: bool = True,
) -> int:
    async with (
        database(settings) as pool,
        jira.open_session(jira_of(settings)) as session,
    ):
        client = jira.JiraClient(session, jira_of(settings))
        projects = None if all_projects else await registration.tracked_projects(pool)
        try:
            listed = await webhooks.list_webhooks(client)
            ours = webhooks.find_ours(listed, url)
            placed = await registrar.put_webhook(
                client, settings, url, projects, ours[0] if ours else None
            )
        except jira.JiraAuthError as error:
            print(display.manual_steps(settings, url, projects, error, show_secret), file=out)
            return 1
        except jira.JiraError as error:
            print(display.failure(error, settings), file=out)
            return 1
        except registrar.NoProjectError as error:
            print(f"jira-status-cache: {error}", file=out)
            return 1
        now = datetime.now(UTC)
        jql = "" if projects is None else webhooks.project_filter(projects)
        saved = registration.Registration(
            placed.webhook.id, url, all_projects, jql, now, now, manage
        )
        await registration.save(pool, saved)
    verb = "created" if placed.created else "updated"
    print(
        f"{verb} webhook {placed.webhook.id} in {jira_of(settings).base_url}",
        file=out,
    )
    print(display.describe(placed.webhook, settings, show_secret), file=out)
    if placed.dropped:
        print(f"left out of the filter, unknown to Jira: {', '.join(placed.dropped)}", file=out)
    print(*display.strays(listed, url, placed.webhook), sep="\n", file=out)
    return 0


def looks_ours(hook: webhooks.Webhook, url: str | None) -> bool:
    if url is not None:
        return webhooks.endpoint(hook.url) == url
    return hook.name == webhooks.NAME or webhooks.endpoint(hook.url).endswith(WEBHOOK_PATH)


# status


async def status(settings: Settings, url: str | None, show_secret: bool, out: TextIO) -> int:
    async with (
        database(settings) as pool,
        jira.open_session(jira_of(settings)) as session,
    ):
        saved = await registration.load(pool)
        last = await registration.last_delivery(pool)
        projects = await registration.tracked_projects(pool)
        try:
            listed = await webhooks.list_webhooks(jira.JiraClient(session, jira_of(settings)))
        except jira.JiraError as error:
            print(display.failure(error, settings), file=out)
            print(f"last delivery: {display.since(last)}", file=out)
            return 1
    ours = [hook for hook in listed if looks_ours(hook, url or (saved.url if saved else None))]
    if not ours:
        print(
            f"webhook: none of ours is registered in {jira_of(settings).base_url}",
            file=out,
        )
        print(f"last delivery: {display.since(last)}", file=out)
        return 1
    for hook in ours:
        print(
            f"webhook {hook.id} ({hook.name or 'unnamed'}) in {jira_of(settings).base_url}",
            file=out,
        )
        print(display.describe(hook, settings, show_secret), file=out)
        print(f"  {'covers':<9}{display.coverage(hook, projects)}", file=out)
    print(f"managed: {display.managed(settings, saved)}", file=out)
    print(f"last delivery: {display.since(last)}", file=out)
    # Uncovered tracked projects: their changes reach us only through the sync and the poll.
    trouble = [display.problems(hook) + _uncovered(hook, projects) for hook in ours]
    return 1 if any(trouble) else 0


def _uncovered(hook: webhooks.Webhook, projects: list[str]) -> list[str]:
    left_out = webhooks.uncovered(hook.jql, projects)
    return [f"leaves out tracked project(s) {', '.join(left_out)}"] if left_out else []


# uninstall


async def uninstall(settings: Settings, url: str | None, show_secret: bool, out: TextIO) -> int:
    async with (
        database(settings) as pool,
        jira.open_session(jira_of(settings)) as session,
    ):
        client = jira.JiraClient(session, jira_of(settings))
        saved = await registration.load(pool)
        wanted = url or (saved.url if saved else None)
        if wanted is None:
            # Another cache may share this Jira: never guess which webhook to delete.
            print("no install is recorded in this database: give --url", file=out)
            return 1
        try:
            ours = [
                hook for hook in await webhooks.list_webhooks(client) if looks_ours(hook, wanted)
            ]
            for hook in ours:
                await webhooks.delete_webhook(client, hook.id)
        except jira.JiraError as error:
            print(display.failure(error, settings), file=out)
            page = f"{jira_of(settings).base_url}{webhooks.ADMIN_PAGE}"
            print(f"Remove the webhook named {webhooks.NAME} by hand at {page}", file=out)
            return 1
        if saved is not None and saved.url == wanted:
            await registration.forget(pool)
    for hook in ours:
        print(
            f"removed webhook {hook.id}: {display.shown(hook.url, settings, show_secret)}", file=out
        )
    if not ours:
        print(
            f"no webhook of ours is registered in {jira_of(settings).base_url}",
            file=out,
        )
    return 0


# check


async def check_webhook(settings: Settings, jira_ok: bool | None) -> Finding:
    if not settings.webhook_secret:
        return Finding("webhook", True, "off: JIRA_WEBHOOK_SECRET is unset")
    if not jira_ok:
        return Finding("webhook", None, "needs Jira")
    saved, last, projects = await _stored(settings)
    quick = dataclasses.replace(jira_of(settings), max_retries=0, timeout=10.0)
    try:
        async with jira.open_session(quick) as session:
            listed = await webhooks.list_webhooks(jira.JiraClient(session, quick))
    except jira.JiraAuthError:
        return Finding("webhook", True, f"not visible without Jira admin rights; last {last}")
    except jira.JiraError as error:
        return Finding("webhook", False, display.scrub(str(error), settings))
    ours = [hook for hook in listed if looks_ours(hook, saved)]
    if not ours:
        # JIRA_WEBHOOK_SECRET says webhooks are expected: without one, changes wait for a sync.
        hint = "`webhook install --url ...` registers one, or unset JIRA_WEBHOOK_SECRET"
        return Finding("webhook", False, f"none of ours registered ({hint}); last {last}")
    hook = ours[0]
    if trouble := display.problems(hook) + _uncovered(hook, projects):
        return Finding("webhook", False, f"webhook {hook.id} {'; '.join(trouble)}")
    detail = f"webhook {hook.id} enabled, filter {hook.jql or 'every project'}; last {last}"
    return Finding("webhook", True, detail)


async def _stored(settings: Settings) -> tuple[str | None, str, list[str]]:
    """Our URL as install saved it, the last delivery and the tracked projects, if the
    database answers (its own line says what is wrong with it)."""
    try:
        dsn = await asyncio.to_thread(resolve_dsn, settings.database_url, settings.data_dir)
        # Through a transaction pooler, named statements would miss on the next transaction.
        cache = 0 if settings.database_pooler == "transaction" else 100
        connection = await asyncpg.connect(dsn, timeout=5, statement_cache_size=cache)
    except CONNECT_FAILED:
        return None, "delivery unknown", []
    try:
        saved = await registration.load(connection)
        last = await registration.last_delivery(connection)
        projects = await registration.tracked_projects(connection)
    except asyncpg.PostgresError:
        return None, "delivery unknown", []
    finally:
        await connection.close()
    return (saved.url if saved else None), f"delivery {display.since(last)}", projects
