"""Issues, people and statuses rendered in the JSON shapes Jira Cloud and Data Center send."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .options import Flavor
from .state import PRIORITIES, SimIssue, Site, Status, User

ISSUE_EXPAND = "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations"
_CATEGORY_IDS = {"new": 2, "indeterminate": 4, "done": 3}
_CATEGORY_COLORS = {"new": "blue-gray", "indeterminate": "yellow", "done": "green"}


@dataclass(frozen=True, slots=True)
class Shape:
    """Where and how an issue is rendered: base URL, API version, flavour, category names."""

    base: str
    version: str
    flavor: Flavor
    category_names: Mapping[str, str]

    def url(self, path: str) -> str:
        return f"{self.base}/rest/api/{self.version}/{path}"


@dataclass(frozen=True, slots=True)
class FieldSelection:
    """Jira's `fields` parameter: names, `*all`, `*navigable`, and `-name` exclusions."""

    include: frozenset[str] | None
    exclude: frozenset[str]

    @classmethod
    def parse(cls, tokens: Iterable[str]) -> FieldSelection:
        names = [token.strip() for token in tokens if token.strip()]
        wanted = {name for name in names if not name.startswith(("-", "*"))}
        everything = any(name in ("*all", "*navigable") for name in names) or not wanted
        excluded = frozenset(name[1:] for name in names if name.startswith("-"))
        return cls(include=None if everything else frozenset(wanted), exclude=excluded)

    def pick(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            name: value
            for name, value in fields.items()
            if (self.include is None or name in self.include) and name not in self.exclude
        }


ALL_FIELDS = FieldSelection(include=None, exclude=frozenset())


def format_time(moment: datetime) -> str:
    """Jira's stamp: milliseconds and the site's offset without a colon (-0600)."""
    text = moment.isoformat(timespec="milliseconds")
    return text[:-3] + text[-2:]


def render_issue(
    issue: SimIssue, site: Site, shape: Shape, selection: FieldSelection = ALL_FIELDS
) -> dict[str, Any]:
    return {
        "expand": ISSUE_EXPAND,
        "id": str(issue.id),
        "self": shape.url(f"issue/{issue.id}"),
        "key": issue.key,
        "fields": selection.pick(render_fields(issue, site, shape)),
    }


def render_fields(issue: SimIssue, site: Site, shape: Shape) -> dict[str, Any]:
    done = issue.status.category == "done"
    return {
        "summary": issue.summary,
        "status": render_status(issue.status, shape),
        "assignee": render_user(issue.assignee, shape) if issue.assignee else None,
        "reporter": render_user(site.users[0], shape),
        "priority": render_priority(issue.priority, shape),
        "issuetype": render_issuetype(shape),
        "project": render_project(issue.project, site, shape),
        "resolution": render_resolution(shape) if done else None,
        "resolutiondate": format_time(issue.status_changed) if done else None,
        "statuscategorychangedate": format_time(issue.status_changed),
        "labels": [],
        "description": None,
        "created": format_time(issue.created),
        "updated": format_time(issue.updated),
    }


def render_status(status: Status, shape: Shape) -> dict[str, Any]:
    category = status.category
    return {
        "self": shape.url(f"status/{status.id}"),
        "description": "",
        "iconUrl": f"{shape.base}/",
        "name": status.name,
        "id": status.id,
        "statusCategory": {
            "self": shape.url(f"statuscategory/{_CATEGORY_IDS[category]}"),
            "id": _CATEGORY_IDS[category],
            "key": category,
            "colorName": _CATEGORY_COLORS[category],
            "name": shape.category_names.get(category, category),
        },
    }


def render_user(user: User, shape: Shape) -> dict[str, Any]:
    """Cloud names people by accountId only; Data Center by name and key."""
    common = {"displayName": user.display_name, "active": True, "timeZone": "America/Chicago"}
    avatars = {size: f"{shape.base}/avatar/{user.key}?s={size}" for size in ("48x48", "24x24")}
    if shape.flavor == "dc":
        identity = {"name": user.name, "key": user.key, "emailAddress": f"{user.name}@example.com"}
        self_url = shape.url(f"user?username={user.name}")
        return {"self": self_url, **identity, "avatarUrls": avatars, **common}
    return {
        "self": shape.url(f"user?accountId={user.account_id}"),
        "accountId": user.account_id,
        "avatarUrls": avatars,
        **common,
        "accountType": "atlassian",
    }


def render_priority(name: str, shape: Shape) -> dict[str, Any]:
    number = PRIORITIES.get(name, "3")
    icon = f"{shape.base}/images/icons/priorities/{name.lower()}.svg"
    return {"self": shape.url(f"priority/{number}"), "iconUrl": icon, "name": name, "id": number}


def render_issuetype(shape: Shape) -> dict[str, Any]:
    return {
        "self": shape.url("issuetype/10001"),
        "id": "10001",
        "description": "A small, distinct piece of work.",
        "name": "Task",
        "subtask": False,
        "hierarchyLevel": 0,
    }


def render_project(project: str, site: Site, shape: Shape) -> dict[str, Any]:
    number = site.ensure_project(project)
    return {
        "self": shape.url(f"project/{number}"),
        "id": number,
        "key": project,
        "name": project.title(),
        "projectTypeKey": "software",
        "simplified": False,
    }


def render_resolution(shape: Shape) -> dict[str, Any]:
    return {"self": shape.url("resolution/10000"), "id": "10000", "name": "Done"}


def render_myself(user: User, email: str | None, shape: Shape) -> dict[str, Any]:
    me = render_user(user, shape)
    if email:
        me["emailAddress"] = email
    return {**me, "locale": "de_DE", "groups": {"size": 1, "items": []}}
