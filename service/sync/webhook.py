"""A Jira webhook delivery: verify it, read it, and apply it, deduped, in one transaction."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from service.model import (
    InvalidIssueError,
    Issue,
    normalize_issue,
    normalize_key,
    read_issue_id,
    read_issue_key,
    storable,
)
from service.storage import issues, tracking, webhooks
from service.storage.pool import Connection, Executor
from service.sync.memo import Memo

Outcome = Literal["applied", "stale", "duplicate", "ignored", "due"]
FULL_ISSUE_EVENTS = frozenset({"jira:issue_created", "jira:issue_updated"})
DELETE_EVENT = "jira:issue_deleted"
KNOWN_EVENTS = FULL_ISSUE_EVENTS | {
    DELETE_EVENT,
    "comment_created",
    "comment_updated",
    "comment_deleted",
    "worklog_created",
    "worklog_updated",
    "worklog_deleted",
}
# hashlib names Jira (and other senders of X-Hub-Signature) may use; sha1 is too weak.
SIGNATURE_METHODS = frozenset({"sha256", "sha384", "sha512"})
# A longer identifier is kept as its hash: it is a primary key, under PostgreSQL's btree limit.
MAX_IDENTIFIER = 255


class SignatureError(PermissionError):
    """A delivery that does not prove it comes from our Jira; `code` says how."""

    def __init__(self, code: str, problem: str) -> None:
        super().__init__(problem)
        self.code = code


class UnusablePayloadError(ValueError):
    """A signed delivery whose content cannot be used; it goes to the dead letters."""


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Named:
    """The issue a delivery names: its id, its key, or both."""

    id: int | None
    key: str | None


def verify(body: bytes, signature: str | None, query_secret: str | None, secret: str) -> None:
    """Accept an HMAC signature of the raw body, or the secret in the URL."""
    if signature:
        method, _, digest = signature.strip().partition("=")
        if method.lower() not in SIGNATURE_METHODS:
            raise SignatureError("invalid_signature", f"unsupported signature method {method!r}")
        expected = hmac.new(secret.encode(), body, method.lower()).hexdigest()
        # As bytes: compare_digest refuses a str that is not ASCII with a TypeError.
        given = digest.strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected.encode(), given):
            raise SignatureError("invalid_signature", "X-Hub-Signature does not match the body")
    elif query_secret is not None:
        if not hmac.compare_digest(query_secret.encode(), secret.encode()):
            raise SignatureError("invalid_signature", "the secret in the URL does not match")
    else:
        raise SignatureError("missing_signature", "neither X-Hub-Signature nor ?secret= given")


def parse(body: bytes, identifier: str | None) -> Delivery:
    """Read a verified body; raise UnusablePayloadError when it is not a Jira event."""
    try:
        payload = json.loads(body)
    except ValueError as exc:  # bad UTF-8 or JSON, or a number of over 4,300 digits
        raise UnusablePayloadError(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise UnusablePayloadError("body is JSON nested too deeply") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("webhookEvent"), str):
        raise UnusablePayloadError("JSON has no webhookEvent")
    return Delivery(delivery_id(body, identifier), storable(payload["webhookEvent"]), payload)


def delivery_id(body: bytes, identifier: str | None) -> str:
    """Jira's identifier; without one, the body itself identifies a retry."""
    if identifier and len(identifier) <= MAX_IDENTIFIER:
        return identifier
    return "sha256:" + hashlib.sha256(identifier.encode() if identifier else body).hexdigest()


async def apply(connection: Connection, delivery: Delivery, ttl: float) -> Outcome:
    """Dedupe and apply one delivery in one transaction; `ttl` schedules a moved key."""
    named = named_issue(delivery.payload)
    full = delivery.event in FULL_ISSUE_EVENTS
    issue = usable_issue(delivery.payload) if full else None
    if full and issue is None and named is None:
        raise UnusablePayloadError(f"{delivery.event} names no issue id or key")
    if issue is not None and not moved_from(delivery.payload):
        return await _apply_plain_update(connection, delivery, issue)
    async with connection.transaction():
        if not await webhooks.record_delivery(connection, delivery.id, delivery.event):
            return "duplicate"
        if issue is not None:
            return await _apply_move(connection, delivery.payload, issue, ttl)
        if named is None:
            return "ignored"
        if full:
            # Jira sent the issue without the fields we need: read it from Jira soon.
            return await _read_soon(connection, named, track=True)
        if delivery.event == DELETE_EVENT and named.id is not None and named.key is not None:
            await issues.mark_deleted(connection, named.id, named.key, event_time(delivery.payload))
            return "applied"
        # Comments and the like name an issue without its fields: read it soon, write nothing.
        return await _read_soon(connection, named, track=False)


async def _apply_plain_update(connection: Connection, delivery: Delivery, issue: Issue) -> Outcome:
    """The common case, most of Jira's traffic: one statement, one round trip."""
    outcome = await webhooks.apply_issue_event(connection, issue, delivery.id, delivery.event)
    if outcome is None:
        return "duplicate"
    return "stale" if outcome == "stale" else "applied"


def usable_issue(payload: dict[str, Any]) -> Issue | None:
    """The event's issue when it carries all we store, else None."""
    try:
        return normalize_issue(payload.get("issue"))
    except InvalidIssueError:
        return None


async def _apply_move(
    connection: Executor, payload: dict[str, Any], issue: Issue, ttl: float
) -> Outcome:
    outcome = (await issues.upsert_issues(connection, [issue], "webhook"))[issue.id]
    old_keys = [key for key in moved_from(payload) if key != issue.key]
    await issues.add_aliases(connection, dict.fromkeys(old_keys, issue.id))
    if old_keys:
        keys = await issues.keys_of(connection, issue.id)
        await tracking.retarget(connection, keys, issue.key, ttl)
    return "stale" if outcome == "stale" else "applied"


async def _read_soon(connection: Executor, named: Named, track: bool) -> Outcome:
    """Make the named issue due for a read now; with `track`, track it if it is not yet."""
    known = await issues.keys_of(connection, named.id) if named.id is not None else []
    keys = known or ([named.key] if named.key is not None else [])
    if track and keys:
        await tracking.track(connection, keys[:1])
    return "due" if keys and await tracking.make_due(connection, keys) else "ignored"


def forget_locally(memo: Memo | None, payload: dict[str, Any]) -> None:
    # PostgreSQL tells every replica; this makes this one's next read see the change at once.
    named = named_issue_or_none(payload)
    if memo is not None and named is not None and named.id is not None:
        memo.drop([named.id])


def moved_from(payload: dict[str, Any]) -> list[str]:
    """Former keys named by a changelog `Key` item (Jira's record of a move)."""
    changelog = payload.get("changelog")
    items = changelog.get("items") if isinstance(changelog, dict) else None
    found = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and str(item.get("field", "")).lower() == "key":
            try:
                found.append(normalize_key(str(item.get("fromString") or "")))
            except ValueError:
                continue
    return found


def named_issue(payload: dict[str, Any]) -> Named | None:
    """The issue the payload names; None if it names none; raise if what it names is malformed."""
    issue = payload.get("issue")
    if not isinstance(issue, dict):
        return None
    raw_id, raw_key = issue.get("id"), issue.get("key")
    try:
        named = Named(
            None if raw_id is None else read_issue_id(raw_id),
            None if raw_key is None else read_issue_key(raw_key),
        )
    except InvalidIssueError as exc:
        raise UnusablePayloadError(exc.problem) from None
    return None if named.id is None and named.key is None else named


def named_issue_or_none(payload: dict[str, Any]) -> Named | None:
    try:
        return named_issue(payload)
    except UnusablePayloadError:
        return None


def event_time(payload: dict[str, Any]) -> datetime:
    stamp = payload.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        with contextlib.suppress(OverflowError, ValueError, OSError):  # not a time at all
            return datetime.fromtimestamp(stamp / 1000, UTC)
    return datetime.now(UTC)
