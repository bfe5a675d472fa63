"""The change log's shapes: an entry, a page, a subscription and the request that makes one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from service.model import KEY_PATTERN, PROJECT_ID_PATTERN, Source, render_time
from service.shapes import Count, Issue, Key, Shape, Time, shape_issue
from service.storage import subscriptions
from service.storage.changes import Change as LoggedChange

FieldName = Literal["key", "status", "summary", "assignee", "priority", "state"]
Cursor = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]
Digits = Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
ProjectId = Annotated[str, msgspec.Meta(pattern=PROJECT_ID_PATTERN.pattern)]
# Callers may send keys in any case: the server upper-cases them, then checks KEY_PATTERN.
KeyInput = Annotated[str, msgspec.Meta(pattern="^[A-Za-z][A-Za-z0-9_]*-[1-9][0-9]*$")]
MAX_URL = 2048
MAX_KEYS = 500  # as Settings.max_batch_keys
Moves = Annotated[
    dict[FieldName, Annotated[list[Any], msgspec.Meta(min_length=2, max_length=2)]],
    msgspec.Meta(
        description="each served field that changed: [old, new]; a newly cached issue lists"
        " what it has from null, with state [null, ok]"
    ),
]


class Change(Shape, frozen=True):
    """One entry of the log as /changes, the stream and subscribers send it."""

    cursor: Cursor
    issue_id: Digits
    key: Annotated[str, msgspec.Meta(pattern=KEY_PATTERN.pattern)]
    at: Time
    source: Source
    fields: Moves
    issue: Issue


class ChangePage(Shape, frozen=True):
    changes: list[Change]
    next: Cursor


class SubscriptionRequest(Shape, frozen=True, kw_only=True):
    """The body of POST /subscriptions; only `url` is required."""

    url: Annotated[
        str,
        msgspec.Meta(
            max_length=MAX_URL,
            extra_json_schema={"format": "uri", "examples": ["https://hooks.internal.example/j"]},
        ),
    ]
    project_id: ProjectId | None = None
    keys: Annotated[list[KeyInput], msgspec.Meta(min_length=1, max_length=MAX_KEYS)] | None = None
    fields: Annotated[list[FieldName], msgspec.Meta(min_length=1)] | None = None


class Lag(Shape, frozen=True):
    entries: Count
    seconds: float


class Subscription(Shape, frozen=True, kw_only=True):
    """A subscription as the API shows it: never its secret."""

    id: Digits
    url: str
    project_id: ProjectId | None
    keys: list[Key] | None
    fields: list[FieldName] | None
    created_at: Time
    cursor: Cursor
    delivered: Count
    last_success_at: Time | None
    last_error: str | None
    last_error_at: Time | None
    paused: bool
    paused_at: Time | None
    paused_reason: str | None
    client: Annotated[
        str | None,
        msgspec.Meta(description="the client that made it; null: made while the API was open"),
    ]
    previous_secret_until: Annotated[
        Time | None,
        msgspec.Meta(description="until then deliveries are signed with the old secret too"),
    ]


class SubscriptionStatus(Subscription, frozen=True, kw_only=True):
    lag: Lag


class NewSubscription(Subscription, frozen=True, kw_only=True):
    secret: Annotated[
        str,
        msgspec.Meta(
            pattern="^whsec_",
            description="signs every delivery (Standard Webhooks); shown only here, once",
        ),
    ]


class Subscriptions(Shape, frozen=True):
    subscriptions: list[Subscription]


DOCUMENTED = (
    Change,
    ChangePage,
    SubscriptionRequest,
    Subscription,
    SubscriptionStatus,
    NewSubscription,
    Subscriptions,
)


def shape_change(change: LoggedChange, ttl: float, now: datetime) -> Change:
    issue = change.cached.issue
    return Change(
        cursor=change.cursor.encode(),
        issue_id=str(issue.id),
        key=issue.key,
        at=render_time(change.at),
        source=change.source,  # type: ignore[arg-type]  # the log's sources are Source's
        fields=change.fields,  # type: ignore[arg-type]  # the log records served fields only
        issue=shape_issue(change.cached, ttl, now),
    )


def shape_subscription(subscription: subscriptions.Subscription) -> dict[str, Any]:
    """The fields every subscription shape shares, for Subscription(**...) and its kin."""
    return {
        "id": str(subscription.id),
        "url": subscription.url,
        "project_id": subscription.project_id,
        "keys": subscription.keys,
        "fields": subscription.fields,
        "created_at": render_time(subscription.created_at),
        "cursor": subscription.cursor.encode(),
        "delivered": subscription.delivered,
        "last_success_at": _time(subscription.last_success_at),
        "last_error": subscription.last_error,
        "last_error_at": _time(subscription.last_error_at),
        "paused": subscription.paused_at is not None,
        "paused_at": _time(subscription.paused_at),
        "paused_reason": subscription.paused_reason,
        "client": subscription.client,
        "previous_secret_until": _time(subscription.previous_secret_until),
    }


def _time(value: datetime | None) -> str | None:
    return None if value is None else render_time(value)
