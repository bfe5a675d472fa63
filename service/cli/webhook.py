"""`webhook install | status | uninstall`: our webhook in Jira, through its admin API or by hand."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

import asyncpg

from service.cli.commands import CONNECT_FAILED, Finding, SubParsers, database, run
from service.config import ConfigError, Settings
from service.http.app import WEBHOOK_PATH
from service.jira import client as jira
from service.jira import webhooks
from service.storage import registration
from service.storage.pool import resolve_dsn
from service.sync import registrar

PLACEHOLDER = "<JIRA_WEBHOOK_SECRET>"
_SECRET_IN_URL = re.compile(r"([?&]secret=)[^&#]*")


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
    status = actions.add_parser("status", help="whether ours is registered, and the last delivery")
    uninstall = actions.add_parser("uninstall", help="remove our webhook from Jira")
    for action in (status, uninstall):
        action.add_argument("--url", type=_url, help="ours; default: the one install registered")
    for action in (install, status, uninstall):
        action.add_argument(
            "--show-secret", action="store_true", help=f"print the secret instead of {PLACEHOLDER}"
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
    if settings.jira_base_url is None:
        raise ConfigError("JIRA_BASE_URL", "required by webhook (e.g. https://acme.atlassian.net)")
    if args.action == "install":
        if not settings.webhook_secret:
            raise ConfigError("JIRA_WEBHOOK_SECRET", "required: Jira proves its deliveries with it")
        return run(install(settings, args.url, args.all_projects, args.show_secret, out))
    if args.action == "status":
        return run(status(settings, args.url, args.show_secret, out))
    return run(uninstall(settings, args.url, args.show_secret, out))


# install


async def install(
    settings: Settings, url: str, all_projects: bool, show_secret: bool, out: TextIO
) -> int:
    async with database(settings) as pool, jira.open_session(settings) as session:
        client = jira.JiraClient(session, settings)
        projects = None if all_projects else await registration.tracked_projects(pool)
        try:
            listed = await webhooks.list_webhooks(client)
            ours = webhooks.find_ours(listed, url)
            placed = await registrar.put_webhook(
                client, settings, url, projects, ours[0] if ours else None
            )
        except jira.JiraAuthError as error:
            print(manual_steps(settings, url, projects, error, show_secret), file=out)
            return 1
        except (jira.JiraError, registrar.NoProjectError) as error:
            print(f"jira-status-cache: {scrub(str(error), settings)}", file=out)
            return 1
        now = datetime.now(UTC)
        jql = "" if projects is None else webhooks.project_filter(projects)
        saved = registration.Registration(placed.webhook.id, url, all_projects, jql, now, now)
        await registration.save(pool, saved)
    verb = "created" if placed.created else "updated"
    print(f"{verb} webhook {placed.webhook.id} in {settings.jira_base_url}", file=out)
    print(describe(placed.webhook, settings, show_secret), file=out)
    if placed.dropped:
        print(f"left out of the filter, unknown to Jira: {', '.join(placed.dropped)}", file=out)
    print(*strays(listed, url, placed.webhook), sep="\n", file=out)
    return 0


def describe(hook: webhooks.Webhook, settings: Settings, show_secret: bool) -> str:
    """Our webhook, a line a fact; any secret in its URL masked unless asked for."""
    signed = "JIRA_WEBHOOK_SECRET, which Jira signs each delivery with"
    if "secret=" in hook.url:
        signed += "; also in the URL, as a Data Center before 10 does not sign"
    rows = [
        ("url", shown(hook.url, settings, show_secret)),
        ("enabled", "yes" if hook.enabled else "NO: Jira sends nothing"),
        ("secret", signed),
        ("events", ", ".join(hook.events) or "none"),
        ("filter", hook.jql or "none: every project"),
        ("body", "sent" if hook.sends_body else "EXCLUDED: the cache cannot use these deliveries"),
    ]
    missing = [event for event in webhooks.EVENTS if event not in hook.events]
    if missing:
        rows.append(("missing", ", ".join(missing)))
    return "\n".join(f"  {name:<9}{value}" for name, value in rows)


def strays(listed: Sequence[webhooks.Webhook], url: str, ours: webhooks.Webhook) -> list[str]:
    """Other webhooks that post to us, or carry our name: Jira would deliver twice."""
    others = [
        hook
        for hook in listed
        if hook.id != ours.id and (looks_ours(hook, url) or hook.name == webhooks.NAME)
    ]
    return [
        f"note: webhook {hook.id} ({hook.name or 'unnamed'}) also posts to "
        f"{webhooks.endpoint(hook.url)}; `webhook uninstall --url ...` or Jira's admin page "
        "removes it"
        for hook in others
    ]


def looks_ours(hook: webhooks.Webhook, url: str | None) -> bool:
    if url is not None:
        return webhooks.endpoint(hook.url) == url
    return hook.name == webhooks.NAME or webhooks.endpoint(hook.url).endswith(WEBHOOK_PATH)


def manual_steps(
    settings: Settings,
    url: str,
    projects: list[str] | None,
    error: jira.JiraAuthError,
    show_secret: bool,
) -> str:
    secret = (settings.webhook_secret or "") if show_secret else PLACEHOLDER
    target = f"{url}?secret={secret}" if settings.jira_flavor == "dc" else url
    jql = webhooks.project_filter(projects) if projects else ""
    return "\n".join(
        [
            f"Jira answered {error.status} to {error.endpoint}: only a Jira administrator may "
            "manage webhooks.",
            "Register ours by hand instead (or run this again with an administrator's "
            "credentials):",
            f"  1. As a Jira administrator open {settings.jira_base_url}{webhooks.ADMIN_PAGE}",
            "     (Jira settings > System > WebHooks) and choose Create a WebHook.",
            f"  2. Name:   {webhooks.NAME}",
            f"  3. URL:    {target}",
            f"  4. Secret: {secret}   (where Jira shows the field; it then signs each delivery)",
            "  5. Events: Issue: created, updated, deleted; Comment: created, updated, deleted",
            f"             ({', '.join(webhooks.EVENTS)})",
            f"  6. JQL:    {jql or '(leave empty: every project)'}",
            '  7. Leave "Exclude body" unchecked, and save.',
            "  8. Change an issue there: `jira-status-cache webhook status` then shows a delivery.",
            *([] if show_secret else [f"{PLACEHOLDER} is JIRA_WEBHOOK_SECRET's value."]),
        ]
    )


def shown(url: str, settings: Settings, show_secret: bool) -> str:
    return url if show_secret else _SECRET_IN_URL.sub(rf"\g<1>{PLACEHOLDER}", url)


def scrub(text: str, settings: Settings) -> str:
    """Jira's own messages may quote the URL we sent, secret and all."""
    secret = settings.webhook_secret
    return text.replace(secret, PLACEHOLDER) if secret else text


# status


async def status(settings: Settings, url: str | None, show_secret: bool, out: TextIO) -> int:
    async with database(settings) as pool, jira.open_session(settings) as session:
        saved = await registration.load(pool)
        last = await registration.last_delivery(pool)
        projects = await registration.tracked_projects(pool)
        try:
            listed = await webhooks.list_webhooks(jira.JiraClient(session, settings))
        except jira.JiraError as error:
            print(f"webhook: cannot list Jira's webhooks: {scrub(str(error), settings)}", file=out)
            print(f"last delivery: {since(last)}", file=out)
            return 1
    ours = [hook for hook in listed if looks_ours(hook, url or (saved.url if saved else None))]
    if not ours:
        print(f"webhook: none of ours is registered in {settings.jira_base_url}", file=out)
        print(f"last delivery: {since(last)}", file=out)
        return 1
    for hook in ours:
        print(f"webhook {hook.id} ({hook.name or 'unnamed'}) in {settings.jira_base_url}", file=out)
        print(describe(hook, settings, show_secret), file=out)
        print(f"  {'covers':<9}{coverage(hook, projects)}", file=out)
    print(f"managed: {managed(settings, saved)}", file=out)
    print(f"last delivery: {since(last)}", file=out)
    return 1 if any(problems(hook) for hook in ours) else 0


def problems(hook: webhooks.Webhook) -> list[str]:
    """Why Jira would not bring us what we need through this webhook."""
    found = [] if hook.enabled else ["is disabled"]
    if missing := [event for event in webhooks.EVENTS if event not in hook.events]:
        found.append(f"lacks {', '.join(missing)}")
    return found if hook.sends_body else [*found, "excludes the body"]


def coverage(hook: webhooks.Webhook, projects: list[str]) -> str:
    if not hook.jql:
        return "every project"
    if projects and webhooks.project_filter(projects) == hook.jql:
        return f"the {len(projects)} tracked project(s)"
    tracked = ", ".join(projects) or "none"
    return f"not the tracked projects ({tracked}): run `webhook install` again"


def managed(settings: Settings, saved: registration.Registration | None) -> str:
    if not settings.webhook_manage:
        return "no (JIRA_WEBHOOK_MANAGE=true keeps the filter on the tracked projects)"
    if saved is None:
        return "no: JIRA_WEBHOOK_MANAGE is on, but `webhook install` has not run"
    return f"yes, filter last set {saved.set_at.isoformat(timespec='seconds')}"


def since(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "none kept (deliveries are kept for WEBHOOK_DEDUPE_DAYS)"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    return f"{moment.astimezone(UTC).isoformat(timespec='seconds')} ({seconds:.0f} s ago)"


# uninstall


async def uninstall(settings: Settings, url: str | None, show_secret: bool, out: TextIO) -> int:
    async with database(settings) as pool, jira.open_session(settings) as session:
        client = jira.JiraClient(session, settings)
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
            print(f"jira-status-cache: {scrub(str(error), settings)}", file=out)
            page = f"{settings.jira_base_url}{webhooks.ADMIN_PAGE}"
            print(f"Remove the webhook named {webhooks.NAME} by hand at {page}", file=out)
            return 1
        await registration.forget(pool)
    for hook in ours:
        print(f"removed webhook {hook.id}: {shown(hook.url, settings, show_secret)}", file=out)
    if not ours:
        print(f"no webhook of ours is registered in {settings.jira_base_url}", file=out)
    return 0


# check


async def check_webhook(settings: Settings, jira_ok: bool | None) -> Finding:
    if not settings.webhook_secret:
        return Finding("webhook", True, "off: JIRA_WEBHOOK_SECRET is unset")
    if not jira_ok:
        return Finding("webhook", None, "needs Jira")
    saved, last = await _stored(settings)
    quick = dataclasses.replace(settings, jira_max_retries=0, jira_timeout=10.0)
    try:
        async with jira.open_session(quick) as session:
            listed = await webhooks.list_webhooks(jira.JiraClient(session, quick))
    except jira.JiraAuthError:
        return Finding("webhook", True, f"not visible without Jira admin rights; last {last}")
    except jira.JiraError as error:
        return Finding("webhook", False, scrub(str(error), settings))
    ours = [hook for hook in listed if looks_ours(hook, saved)]
    if not ours:
        hint = "polling alone keeps the cache fresh; `webhook install --url ...` registers one"
        return Finding("webhook", True, f"none registered ({hint}); last {last}")
    hook = ours[0]
    if trouble := problems(hook):
        return Finding("webhook", False, f"webhook {hook.id} {'; '.join(trouble)}")
    detail = f"webhook {hook.id} enabled, filter {hook.jql or 'every project'}; last {last}"
    return Finding("webhook", True, detail)


async def _stored(settings: Settings) -> tuple[str | None, str]:
    """Our URL as install saved it, and the last delivery, if the database answers (its own
    line says what is wrong with it)."""
    try:
        dsn = await asyncio.to_thread(resolve_dsn, settings.database_url, settings.data_dir)
        connection = await asyncpg.connect(dsn, timeout=5)
    except CONNECT_FAILED:
        return None, "delivery unknown"
    try:
        saved = await registration.load(connection)
        last = await registration.last_delivery(connection)
    except asyncpg.PostgresError:
        return None, "delivery unknown"
    finally:
        await connection.close()
    return (saved.url if saved else None), f"delivery {since(last)}"
