"""How our webhook is put to an operator: its facts, the steps by hand, secrets masked."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from service.config import JiraSettings, Settings
from service.jira import client as jira
from service.jira import webhooks
from service.model import render_time
from service.storage import registration

PLACEHOLDER = "<JIRA_WEBHOOK_SECRET>"


def printable(text: str) -> str:
    """`text` with each control or unprintable character escaped as repr() writes it, so that
    content from Jira or a caller cannot move the cursor, recolour or retitle a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def jira_of(settings: Settings) -> JiraSettings:
    """The Jira settings every webhook command needs (JIRA_BASE_URL and credentials)."""
    return settings.require_jira("webhook")


_SECRET_IN_URL = re.compile(r"([?&]secret=)[^&#]*")


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
        if hook.id != ours.id and (webhooks.endpoint(hook.url) == url or hook.name == webhooks.NAME)
    ]
    return [
        f"note: webhook {hook.id} ({hook.name or 'unnamed'}) also posts to "
        f"{webhooks.endpoint(hook.url)}; `webhook uninstall --url ...` or Jira's admin page "
        "removes it"
        for hook in others
    ]


def manual_steps(
    settings: Settings,
    url: str,
    projects: list[str] | None,
    error: jira.JiraAuthError,
    show_secret: bool,
) -> str:
    secret = (settings.webhook_secret or "") if show_secret else PLACEHOLDER
    target = f"{url}?secret={secret}" if jira_of(settings).flavor == "dc" else url
    jql = webhooks.project_filter(projects) if projects else ""
    return "\n".join(
        [
            failure(error, settings),
            "Register ours by hand instead (or run this again with an administrator's "
            "credentials):",
            f"  1. As a Jira administrator open {jira_of(settings).base_url}{webhooks.ADMIN_PAGE}",
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


def failure(error: jira.JiraError, settings: Settings) -> str:
    """Jira's refusal put plainly: a 401 or 403 here means we are no Jira administrator."""
    if isinstance(error, jira.JiraAuthError):
        return (
            f"Jira answered {error.status} to {error.endpoint}: only a Jira administrator may "
            "manage webhooks."
        )
    return f"jira-status-cache: {scrub(str(error), settings)}"


def shown(url: str, settings: Settings, show_secret: bool) -> str:
    return url if show_secret else _SECRET_IN_URL.sub(rf"\g<1>{PLACEHOLDER}", url)


def scrub(text: str, settings: Settings) -> str:
    """Jira's own messages may quote the URL we sent, secret and all."""
    secret = settings.webhook_secret
    return text.replace(secret, PLACEHOLDER) if secret else text


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
    if left_out := webhooks.uncovered(hook.jql, projects):
        return (
            f"leaves out tracked project(s) {', '.join(left_out)}: their changes wait for the "
            "sync; run `webhook install` again (serve keeps a managed filter current)"
        )
    tracked = ", ".join(projects) or "none"
    return f"not exactly the tracked projects ({tracked}); every tracked one is covered"


def managed(settings: Settings, saved: registration.Registration | None) -> str:
    if not settings.webhook_manage:
        return "no: JIRA_WEBHOOK_MANAGE=false (unset it to keep the filter on the tracked projects)"
    if saved is None:
        return "no: `webhook install` has not registered one from this database"
    if saved.all_projects:
        return "no need: it covers every project (--all-projects)"
    if not saved.manage:
        return "no: installed with --no-manage (run `webhook install` without it to manage)"
    return f"yes, filter last set {render_time(saved.set_at)}"


def since(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "none kept (deliveries are kept for WEBHOOK_DEDUPE_DAYS)"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    return f"{render_time(moment)} ({seconds:.0f} s ago)"
