"""Jira's webhook event, declared once: how a delivery's body is read, and what OpenAPI says.

Only what the cache reads is declared. msgspec passes over the rest of a body (the
description, custom fields, watchers, time tracking: most of Jira's 5 KB) without building
it. A body these types do not fit (a field of another type, a number past 64 bits, a lone
surrogate) is read whole instead, and judged by the same rules: only the cost differs.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class EventFields(msgspec.Struct, frozen=True):
    """The issue's fields the cache keeps; Jira sends many more."""

    status: Any = UNSET
    summary: Any = UNSET
    assignee: Any = UNSET
    priority: Any = UNSET
    updated: Any = UNSET


class EventIssue(msgspec.Struct, frozen=True):
    id: Any = UNSET
    key: Any = UNSET
    fields: EventFields | UnsetType = UNSET


class WebhookEvent(msgspec.Struct, frozen=True, rename="camel"):
    """An issue event with `issue.id`, `key` and `fields.updated` is applied; one that names
    the issue (id or key) but lacks fields is accepted as `due` and the issue read from Jira
    soon; one naming no issue, or a malformed id or key, is 400 (`unusable_payload`).
    `fields.status`, `summary`, `assignee` and `priority` are kept when present, a changelog
    `Key` item records a move, `timestamp` (ms) dates a delete. Events other than an issue's
    are answered `ignored` or `due`, whatever else they hold."""

    webhook_event: str
    timestamp: Any = UNSET
    issue: EventIssue | UnsetType = UNSET
    changelog: Any = UNSET


_EVENT = msgspec.json.Decoder(WebhookEvent)


def decode(body: bytes) -> Any:
    """The body as JSON, holding at least what json.loads would of the declared fields."""
    try:
        return msgspec.to_builtins(_EVENT.decode(body))
    except (msgspec.DecodeError, RecursionError):
        return _whole(body)


def _whole(body: bytes) -> Any:
    """JSON as json.loads reads it; msgspec first, in a third of the time, while what it
    refuses (a lone surrogate, a number past 64 bits) json.loads judges as before."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(body)
