"""Jira's admin webhook API, `/rest/webhooks/1.0/webhook`: our webhook listed, made, changed, gone.

Cloud and Data Center share the route and its JSON: `{name, url, events, filters:
{"issue-related-events-section": JQL}, excludeBody, enabled, secret}`; each webhook is known by
the last segment of its `self`. Servers older than Jira 7 read and answer `jqlFilter` and
`excludeIssueDetails` instead, so both are read. Only a Jira administrator may call it: anyone
else gets 401 or 403 (`JiraAuthError`), and must register the webhook by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from service.config import Flavor
from service.jira.client import JiraClient
from service.jira.errors import JiraError, unknown_projects_in

PATH = "/rest/webhooks/1.0/webhook"
ADMIN_PAGE = "/plugins/servlet/webhooks"
NAME = "jira-status-cache"
# What the receiver uses (service.http.inbox.KNOWN_EVENTS); worklogs change nothing we cache.
EVENTS = (
    "jira:issue_created",
    "jira:issue_updated",
    "jira:issue_deleted",
    "comment_created",
    "comment_updated",
    "comment_deleted",
)
SECTION = "issue-related-events-section"


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook as Jira lists it; `jql` is empty when it covers every project."""

    id: str
    name: str
    url: str
    events: tuple[str, ...]
    jql: str
    enabled: bool
    sends_body: bool


@dataclass(frozen=True, slots=True)
class Spec:
    """The webhook we ask Jira for."""

    url: str
    jql: str
    secret: str | None = field(default=None, repr=False)
    enabled: bool = True

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": NAME,
            "url": self.url,
            "events": list(EVENTS),
            "filters": {SECTION: self.jql},
            "excludeBody": False,
            "enabled": self.enabled,
        }
        if self.secret:
            body["secret"] = self.secret
        return body


def spec_for(flavor: Flavor, url: str, jql: str, secret: str, enabled: bool = True) -> Spec:
    """Our webhook; Data Center also gets the secret in its URL, since before 10 it cannot sign."""
    target = str(URL(url).update_query(secret=secret)) if flavor == "dc" else url
    return Spec(target, jql, secret, enabled)


_PROJECT_FILTER = re.compile(r"project\s+in\s*\(([^)]*)\)", re.IGNORECASE)


def project_filter(projects: Iterable[str]) -> str:
    """`project in ("A", "B")`: quoted, since a project key may be a JQL word such as AND."""
    quoted = ", ".join(f'"{project}"' for project in sorted(set(projects)))
    return f"project in ({quoted})"


def uncovered(jql: str, projects: Iterable[str]) -> list[str]:
    """The `projects` a webhook filter leaves out: an empty filter covers every project; a
    filter other than `project in (...)` is not read, and counts as covering them."""
    if not jql.strip():
        return []
    match = _PROJECT_FILTER.fullmatch(jql.strip())
    if match is None:
        return []
    named = {name.strip().strip('"').upper() for name in match[1].split(",")}
    return sorted(set(projects) - named)


def unknown_projects(error: JiraError) -> set[str]:
    """The projects a 400 says do not exist; empty for any other error."""
    if error.status != 400:
        return set()
    return unknown_projects_in(error.problem)


def endpoint(url: str) -> str:
    """The URL without query, fragment or trailing slash: ours whatever secret it carries."""
    return str(URL(url).with_query(None).with_fragment(None)).rstrip("/")


def find_ours(webhooks: Sequence[Webhook], url: str) -> list[Webhook]:
    return [hook for hook in webhooks if endpoint(hook.url) == endpoint(url)]


async def list_webhooks(client: JiraClient) -> list[Webhook]:
    _, body = await client.request("GET", PATH)
    if not isinstance(body, list):
        raise JiraError(f"GET {PATH}", 200, "the answer is not a list of webhooks")
    return [read_webhook(f"GET {PATH}", raw) for raw in body]


async def get_webhook(client: JiraClient, webhook_id: str) -> Webhook | None:
    path = f"{PATH}/{_checked(webhook_id)}"
    status, body = await client.request("GET", path, accept=(200, 404))
    return None if status == 404 else read_webhook(f"GET {path}", body)


async def create_webhook(client: JiraClient, spec: Spec) -> Webhook:
    _, body = await client.request("POST", PATH, accept=(200, 201), body=spec.body())
    return read_webhook(f"POST {PATH}", body)


async def update_webhook(client: JiraClient, webhook_id: str, spec: Spec) -> Webhook | None:
    """Replace the webhook's settings; None when Jira no longer has it."""
    path = f"{PATH}/{_checked(webhook_id)}"
    status, body = await client.request("PUT", path, accept=(200, 404), body=spec.body())
    return None if status == 404 else read_webhook(f"PUT {path}", body)


async def delete_webhook(client: JiraClient, webhook_id: str) -> bool:
    """Remove the webhook; False when Jira did not have it."""
    path = f"{PATH}/{_checked(webhook_id)}"
    status, _ = await client.request("DELETE", path, accept=(200, 204, 404))
    return status != 404


def read_webhook(endpoint: str, raw: Any) -> Webhook:
    if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
        raise JiraError(endpoint, 200, "a webhook without a url")
    webhook_id = str(raw.get("self") or "").rstrip("/").rsplit("/", 1)[-1]
    if not webhook_id.isdigit():
        raise JiraError(endpoint, 200, f"a webhook without a numeric id in self: {webhook_id!r}")
    filters = raw.get("filters")
    jql = filters.get(SECTION) if isinstance(filters, dict) else raw.get("jqlFilter")
    events = raw.get("events")
    return Webhook(
        id=webhook_id,
        name=str(raw.get("name") or ""),
        url=raw["url"],
        events=tuple(str(event) for event in events) if isinstance(events, list) else (),
        jql=jql.strip() if isinstance(jql, str) else "",
        enabled=raw.get("enabled", True) is not False,
        sends_body=not (raw.get("excludeBody") or raw.get("excludeIssueDetails")),
    )


def _checked(webhook_id: str) -> str:
    # It goes into a path: Jira's ids are numbers, and nothing else may pass.
    if not webhook_id.isdigit():
        raise ValueError(f"{webhook_id!r} is not a Jira webhook id")
    return webhook_id
