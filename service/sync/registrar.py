"""Our Jira webhook put in place, and kept on the tracked projects (JIRA_WEBHOOK_MANAGE)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from service.config import Settings
from service.jira import webhooks
from service.jira.client import JiraClient, JiraError
from service.storage import registration

log = logging.getLogger(__name__)
EVERY_SECONDS = 60.0
Outcome = Literal["waiting", "all_projects", "unmanaged", "unchanged", "updated", "gone"]


class NoProjectError(LookupError):
    def __init__(self, dropped: list[str]) -> None:
        why = f"Jira knows none of {', '.join(dropped)}" if dropped else "nothing is tracked yet"
        super().__init__(
            f"no Jira project to filter on ({why}): link issues first, or pass --all-projects"
        )


@dataclass(frozen=True, slots=True)
class Placed:
    """The webhook as Jira now has it, and the projects Jira refused from the filter."""

    webhook: webhooks.Webhook
    created: bool
    dropped: list[str] = field(default_factory=list)


async def put_webhook(
    client: JiraClient,
    settings: Settings,
    url: str,
    projects: list[str] | None,
    existing: webhooks.Webhook | None,
    enabled: bool = True,
) -> Placed:
    """Create our webhook, or update `existing`; `projects` None covers every project.

    A project Jira does not have (a mistyped link, a deleted project) is left out of the
    filter rather than failing the whole registration.
    """
    dropped: list[str] = []
    while True:
        if projects is not None and not projects:
            raise NoProjectError(dropped)
        jql = "" if projects is None else webhooks.project_filter(projects)
        spec = webhooks.spec_for(
            settings.require_jira("webhook").flavor, url, jql, _secret(settings), enabled
        )
        try:
            return await _create_or_update(client, spec, existing, dropped)
        except JiraError as error:
            unknown = webhooks.unknown_projects(error) & set(projects or ())
            if not unknown:
                raise
            log.warning("Jira has no project %s; left out of the webhook filter", sorted(unknown))
            dropped += sorted(unknown)
            projects = [project for project in projects or () if project not in unknown]


async def _create_or_update(
    client: JiraClient, spec: webhooks.Spec, existing: webhooks.Webhook | None, dropped: list[str]
) -> Placed:
    if existing is not None:
        updated = await webhooks.update_webhook(client, existing.id, spec)
        if updated is not None:
            return Placed(updated, False, dropped)
    # Not there, or deleted in Jira since it was listed.
    return Placed(await webhooks.create_webhook(client, spec), True, dropped)


def _secret(settings: Settings) -> str:
    if not settings.webhook_secret:
        raise ValueError("JIRA_WEBHOOK_SECRET is unset: the webhook endpoint would refuse Jira")
    return settings.webhook_secret


async def manage_filter(
    pool: asyncpg.Pool, client: JiraClient, settings: Settings, now: datetime
) -> Outcome:
    """Set our webhook's filter to the tracked projects if they changed since it was last set.

    One replica at a time, at most once every EVERY_SECONDS: the others skip the locked row.
    """
    async with pool.acquire() as connection, connection.transaction():
        found = await registration.claim_check(connection, now, EVERY_SECONDS)
        if found is None:
            return "waiting"  # none installed, checked less than a minute ago, or elsewhere
        if found.all_projects or not found.manage:
            await registration.mark_checked(connection, now)
            return "all_projects" if found.all_projects else "unmanaged"
        projects = await registration.tracked_projects(connection)
        if not projects or webhooks.project_filter(projects) == found.jql:
            await registration.mark_checked(connection, now)
            return "unchanged"
        current = await webhooks.get_webhook(client, found.webhook_id)
        if current is None:
            log.warning("our Jira webhook %s is gone; run `webhook install` again", found.url)
            await registration.forget(connection)
            return "gone"
        # An administrator may have disabled it in Jira: that stays so.
        placed = await put_webhook(client, settings, found.url, projects, current, current.enabled)
        # The projects it was set for, not what Jira kept of them: a project Jira refused
        # does not make every later check call Jira again.
        await registration.mark_checked(connection, now, webhooks.project_filter(projects))
        log.info("webhook filter updated", extra={"jql": placed.webhook.jql})
        return "updated"


async def manage_job(
    pool: asyncpg.Pool,
    client: JiraClient,
    settings: Settings,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    # The top of a background job: whatever fails is logged, and the next run tries again.
    try:
        await manage_filter(pool, client, settings, clock())
    except (JiraError, NoProjectError) as error:
        log.warning("cannot update the Jira webhook's filter: %s", error)
    except Exception:
        log.exception("managing the Jira webhook failed")
