"""Webhook payloads as Jira builds them: the event, the actor, the issue and a changelog."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .render import Shape, format_time, render_fields, render_user
from .state import SimIssue, Site, Status, User


def issue_event(
    event: str,
    type_name: str,
    issue: dict[str, Any],
    actor: dict[str, Any],
    stamp: datetime,
    changelog: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "timestamp": int(stamp.timestamp() * 1000),
        "webhookEvent": event,
        "issue_event_type_name": type_name,
        "user": actor,
        "issue": issue,
    }
    if changelog is not None:
        payload["changelog"] = changelog
    return payload


def comment_event(
    comment: dict[str, Any], issue: SimIssue, site: Site, shape: Shape, stamp: datetime
) -> dict[str, Any]:
    """comment_created names the issue with a few fields only: no `updated`, no actor."""
    fields = render_fields(issue, site, shape)
    brief = ("summary", "issuetype", "project", "assignee", "priority", "status")
    return {
        "timestamp": int(stamp.timestamp() * 1000),
        "webhookEvent": "comment_created",
        "comment": comment,
        "issue": {
            "id": str(issue.id),
            "self": shape.url(f"issue/{issue.id}"),
            "key": issue.key,
            "fields": {name: fields[name] for name in brief},
        },
    }


def comment_json(
    number: int, issue: SimIssue, author: User, body: str, stamp: datetime, shape: Shape
) -> dict[str, Any]:
    person = render_user(author, shape)
    return {
        "self": shape.url(f"issue/{issue.id}/comment/{number}"),
        "id": str(number),
        "author": person,
        "body": body,
        "updateAuthor": person,
        "created": format_time(stamp),
        "updated": format_time(stamp),
        "jsdPublic": True,
    }


def changelog(number: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": str(number), "items": items}


def item(
    field: str, old: str | None, old_text: str | None, new: str | None, new_text: str | None
) -> dict[str, Any]:
    return {
        "field": field,
        "fieldtype": "jira",
        "fieldId": field.lower(),
        "from": old,
        "fromString": old_text,
        "to": new,
        "toString": new_text,
    }


def status_items(old: Status | None, new: Status) -> list[dict[str, Any]]:
    """A status change, plus the resolution when the issue enters or leaves Done."""
    before: tuple[str | None, str | None] = (old.id, old.name) if old else (None, None)
    changes = [item("status", *before, new.id, new.name)]
    was_done, is_done = old is not None and old.category == "done", new.category == "done"
    if was_done != is_done:
        changes.append(item("resolution", *_resolution(was_done), *_resolution(is_done)))
    return changes


def _resolution(done: bool) -> tuple[str | None, str | None]:
    return ("10000", "Done") if done else (None, None)


def assignee_item(old: User | None, new: User | None, shape: Shape) -> dict[str, Any]:
    """Cloud names people by accountId (and repeats it in tmp*AccountId); DC by username."""
    dc = shape.flavor == "dc"
    change = item("assignee", *_person(old, dc), *_person(new, dc))
    if dc:
        return change
    return {**change, "tmpFromAccountId": change["from"], "tmpToAccountId": change["to"]}


def _person(user: User | None, dc: bool) -> tuple[str | None, str | None]:
    if user is None:
        return None, None
    return (user.name if dc else user.account_id), user.display_name


def move_items(old_key: str, old_project: str, issue: SimIssue, site: Site) -> list[dict[str, Any]]:
    """A move changes the project and the key; the Key item carries only the strings."""
    project = item(
        "project",
        site.projects[old_project],
        old_project.title(),
        site.projects[issue.project],
        issue.project.title(),
    )
    key = {**item("Key", None, old_key, None, issue.key), "fieldId": "issuekey"}
    return [project, key]
