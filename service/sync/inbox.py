"""A Jira webhook delivery: verify it, read it, apply it deduped, committed before answering."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from service.jira import event
from service.model import (
    InvalidIssueError,
    Issue,
    normalize_issue,
    normalize_key,
    read_issue_id,
    read_issue_key,
    storable,
)
from service.storage import inbox, issues, tracking
from service.storage.inbox import Update
from service.storage.pool import Executor
from service.sync.grouped import GroupCommit
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
        payload = event.decode(body)
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


@dataclass(frozen=True, slots=True)
class Received:
    """A delivery as it arrived: the raw body and what proves and names it."""

    body: bytes
    signature: str | None
    query_secret: str | None
    identifier: str | None


class Receiver:
    """Jira's deliveries in: the one domain call of the webhook route."""

    def __init__(self, pool: asyncpg.Pool, memo: Memo | None, secret: str, ttl: float) -> None:
        self.pool, self.memo, self.secret, self.ttl = pool, memo, secret, ttl
        self.group = GroupCommit(pool)

    async def handle(self, received: Received) -> tuple[str, Outcome]:
        """Verify, read and apply a delivery: its event (for metrics) and outcome.

        Raise SignatureError, storing nothing, or UnusablePayloadError once the body is
        kept as a dead letter. An outcome means the delivery is committed.
        """
        verify(received.body, received.signature, received.query_secret, self.secret)
        try:
            delivery = parse(received.body, received.identifier)
            outcome = await self.apply(delivery)
        except UnusablePayloadError as exc:
            letter = readable(received.body)
            await inbox.add_dead_letter(self.pool, received.identifier, str(exc), letter)
            raise
        forget_locally(self.memo, delivery.payload)
        # Label values stay few: Jira's event names, or "other" for anything unexpected.
        return (delivery.event if delivery.event in KNOWN_EVENTS else "other"), outcome

    async def apply(self, delivery: Delivery) -> Outcome:
        """Dedupe and apply one delivery, committed before it answers."""
        named = named_issue(delivery.payload)
        full = delivery.event in FULL_ISSUE_EVENTS
        issue = usable_issue(delivery.payload) if full else None
        if full and issue is None and named is None:
            raise UnusablePayloadError(f"{delivery.event} names no issue id or key")
        if issue is not None and not moved_from(delivery.payload):
            # The common case, most of Jira's traffic: written in a group commit.
            written = await self.group.write(Update(delivery.id, delivery.event, issue))
            return "duplicate" if written is None else "stale" if written == "stale" else "applied"
        async with self.pool.acquire() as connection, connection.transaction():
            if not await inbox.record_delivery(connection, delivery.id, delivery.event):
                return "duplicate"
            return await _apply_other(connection, delivery, named, issue, self.ttl)


async def _apply_other(
    connection: Executor, delivery: Delivery, named: Named | None, issue: Issue | None, ttl: float
) -> Outcome:
    """A move, a deletion, a comment, an issue without its fields: inside the delivery's
    own transaction, which recorded it."""
    if issue is not None:
        return await _apply_move(connection, delivery.payload, issue, ttl)
    if named is None:
        return "ignored"
    if delivery.event in FULL_ISSUE_EVENTS:
        # Jira sent the issue without the fields we need: read it from Jira soon.
        return await _read_soon(connection, named, track=True)
    if delivery.event == DELETE_EVENT and named.id is not None and named.key is not None:
        await issues.mark_deleted(connection, named.id, named.key, event_time(delivery.payload))
        return "applied"
    # Comments and the like name an issue without its fields: read it soon, write nothing.
    return await _read_soon(connection, named, track=False)


def readable(body: bytes) -> str:
    """The body as text PostgreSQL can keep, which holds no NUL."""
    return body.decode("utf-8", "replace").replace("\x00", "\ufffd")


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
