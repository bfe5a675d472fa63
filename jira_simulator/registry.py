"""Jira's admin webhooks: `/rest/webhooks/1.0/webhook` for administrators, and who gets an event.

The webhook set by `--webhook-url` (`SimOptions.webhook_url`) is listed as webhook 1, read from
the options, so that the tests and the demo that set it keep working; the first change to it
through the API makes it an ordinary registered webhook.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from yarl import URL

from . import jql
from .gate import ANONYMOUS, SIM, jira_errors, unauthorized
from .hooks import Target, configured_target
from .options import SimOptions
from .state import SimIssue, Site

PATH = "/rest/webhooks/1.0/webhook"
SECTION = "issue-related-events-section"
CONFIGURED = 1
FORBIDDEN = "You are not allowed to manage webhooks: this needs the Jira Administrators permission."


@dataclass(slots=True)
class Webhook:
    id: int
    name: str
    url: str
    events: frozenset[str]
    jql: str
    enabled: bool = True
    exclude_body: bool = False
    secret: str | None = field(default=None, repr=False)
    updated: datetime | None = None

    def matches(self, event: str, issue: SimIssue | None, site: Site) -> bool:
        if not self.enabled or event not in self.events:
            return False
        if not self.jql:
            return True
        try:
            return issue is not None and jql.matches(jql.parse(self.jql), issue, site)
        except jql.JqlError:
            return False  # a filter naming a project since deleted matches nothing


class Registry:
    """The site's webhooks, and the switches a test turns on the admin API."""

    def __init__(self, options: SimOptions, site: Site) -> None:
        self.options = options
        self.site = site
        self.webhooks: dict[int, Webhook] = {}
        self.admin = True  # False: our credentials lack admin rights; the routes answer 403
        self.signs = True  # False: a Data Center before 10, which keeps a secret but never signs
        self._ids = itertools.count(CONFIGURED + 1)

    def targets(self, event: str, issue: SimIssue | None) -> list[Target]:
        """Where an event goes: the configured webhook, and every registered one it matches."""
        configured = configured_target(self.options)
        found = [configured] if configured and event in self.options.webhook_events else []
        for hook in self.webhooks.values():
            if hook.matches(event, issue, self.site):
                found.append(Target(URL(hook.url), hook.secret if self.signs else None))
        return found

    def listed(self) -> list[Webhook]:
        hooks = list(self.webhooks.values())
        if self.options.webhook_url and CONFIGURED not in self.webhooks:
            events = self.options.webhook_events
            hooks.insert(0, Webhook(CONFIGURED, "configured", self.options.webhook_url, events, ""))
        return hooks

    def find(self, number: int) -> Webhook | None:
        return next((hook for hook in self.listed() if hook.id == number), None)

    def save(self, hook: Webhook) -> Webhook:
        if hook.id == CONFIGURED:
            self.options.webhook_url = None  # from now on it is an ordinary registered webhook
        hook.updated = self.site.now()
        self.webhooks[hook.id] = hook
        return hook

    def remove(self, number: int) -> bool:
        if number == CONFIGURED and self.options.webhook_url:
            self.options.webhook_url = None
            return True
        return self.webhooks.pop(number, None) is not None

    def new_id(self) -> int:
        return next(self._ids)


def registry_routes() -> list[web.RouteDef]:
    return [
        web.get(PATH, list_webhooks),
        web.post(PATH, create_webhook),
        web.get(PATH + "/{id}", get_webhook),
        web.put(PATH + "/{id}", update_webhook),
        web.delete(PATH + "/{id}", delete_webhook),
    ]


async def list_webhooks(request: web.Request) -> web.Response:
    if (refusal := _refusal(request)) is not None:
        return refusal
    hooks = _registry(request).listed()
    return web.json_response([_bean(request, hook) for hook in hooks])


async def get_webhook(request: web.Request) -> web.Response:
    if (refusal := _refusal(request)) is not None:
        return refusal
    hook = _found(request)
    return _missing() if hook is None else web.json_response(_bean(request, hook))


async def create_webhook(request: web.Request) -> web.Response:
    if (refusal := _refusal(request)) is not None:
        return refusal
    registry = _registry(request)
    hook = await _read(request, registry.new_id(), None)
    if isinstance(hook, web.Response):
        return hook
    return web.json_response(_bean(request, registry.save(hook)), status=201)


async def update_webhook(request: web.Request) -> web.Response:
    if (refusal := _refusal(request)) is not None:
        return refusal
    current = _found(request)
    if current is None:
        return _missing()
    hook = await _read(request, current.id, current)
    if isinstance(hook, web.Response):
        return hook
    return web.json_response(_bean(request, _registry(request).save(hook)))


async def delete_webhook(request: web.Request) -> web.Response:
    if (refusal := _refusal(request)) is not None:
        return refusal
    number = _number(request)
    if number is None or not _registry(request).remove(number):
        return _missing()
    return web.Response(status=204)


def _refusal(request: web.Request) -> web.Response | None:
    if request.get(ANONYMOUS):
        return unauthorized()
    return None if _registry(request).admin else jira_errors(403, FORBIDDEN)


def _registry(request: web.Request) -> Registry:
    return request.app[SIM].registry


def _number(request: web.Request) -> int | None:
    text = request.match_info["id"]
    return int(text) if text.isdigit() else None


def _found(request: web.Request) -> Webhook | None:
    number = _number(request)
    return None if number is None else _registry(request).find(number)


def _missing() -> web.Response:
    return jira_errors(404, "The webhook does not exist.")


async def _read(
    request: web.Request, number: int, current: Webhook | None
) -> Webhook | web.Response:
    """A webhook from the body, or Jira's 400 naming what is wrong with it."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return jira_errors(400, "The request body is not a JSON object.")
    problem = _problem(body)
    if problem is not None:
        return problem
    filters = body.get("filters")
    text = filters.get(SECTION, "") if isinstance(filters, dict) else body.get("jqlFilter", "")
    try:
        jql.run(jql.parse(text), _registry(request).site, _registry(request).site.find)
    except jql.JqlError as error:
        return web.json_response(
            {"errorMessages": [], "errors": {"filters": str(error)}}, status=400
        )
    return Webhook(
        id=number,
        name=body["name"],
        url=body["url"],
        events=frozenset(body.get("events") or ()),
        jql=str(text).strip(),
        enabled=body.get("enabled", True) is not False,
        exclude_body=bool(body.get("excludeBody") or body.get("excludeIssueDetails")),
        # Jira never shows a secret back; a change that names none keeps it.
        secret=body.get("secret") or (current.secret if current else None),
    )


def _problem(body: dict[str, Any]) -> web.Response | None:
    errors: dict[str, str] = {}
    if not isinstance(body.get("name"), str) or not body["name"].strip():
        errors["name"] = "The name must not be empty."
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        errors["url"] = "The URL must be an absolute http or https URL."
    events = body.get("events", [])
    if not isinstance(events, list) or not all(isinstance(event, str) for event in events):
        errors["events"] = "The events must be a list of event names."
    if "secret" in body and not isinstance(body["secret"], str | None):
        errors["secret"] = "The secret must be a string."  # noqa: S105 -- a message
    if not errors:
        return None
    return web.json_response({"errorMessages": [], "errors": errors}, status=400)


def _bean(request: web.Request, hook: Webhook) -> dict[str, Any]:
    """A webhook as Jira answers it: never its secret."""
    sim = request.app[SIM]
    user = sim.site.users[0]
    return {
        "self": f"{request.url.origin()}{PATH}/{hook.id}",
        "name": hook.name,
        "url": hook.url,
        "excludeBody": hook.exclude_body,
        "filters": {SECTION: hook.jql},
        "events": sorted(hook.events),
        "enabled": hook.enabled,
        "lastUpdated": int(hook.updated.timestamp() * 1000) if hook.updated else None,
        "lastUpdatedUser": user.name,
        "lastUpdatedDisplayName": user.display_name,
    }
