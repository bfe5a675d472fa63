"""The Jira webhook receiver: verify, dedupe, normalize, store, in one transaction."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.http.errors import ApiError
from service.metrics import Metrics
from service.model import InvalidIssueError, Issue, normalize_issue, normalize_key, storable
from service.storage import issues as store
from service.storage import tracking
from service.storage import webhooks as deliveries
from service.storage.pool import Connection, Executor
from service.sync.memo import Memo

log = logging.getLogger(__name__)

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


class UnusablePayloadError(ValueError):
    """A signed delivery whose content cannot be used; it goes to the dead letters."""


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event: str
    payload: dict[str, Any]


def verify(body: bytes, signature: str | None, query_secret: str | None, secret: str) -> None:
    """Accept an HMAC signature of the raw body, or the secret in the URL; else 401."""
    if signature:
        method, _, digest = signature.strip().partition("=")
        if method.lower() not in SIGNATURE_METHODS:
            raise ApiError(401, "invalid_signature", f"unsupported signature method {method!r}")
        expected = hmac.new(secret.encode(), body, method.lower()).hexdigest()
        # As bytes: compare_digest refuses a str that is not ASCII with a TypeError.
        given = digest.strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected.encode(), given):
            raise ApiError(401, "invalid_signature", "X-Hub-Signature does not match the body")
    elif query_secret is not None:
        if not hmac.compare_digest(query_secret.encode(), secret.encode()):
            raise ApiError(401, "invalid_signature", "the secret in the URL does not match")
    else:
        raise ApiError(401, "missing_signature", "neither X-Hub-Signature nor ?secret= given")


def parse(body: bytes, identifier: str | None) -> Delivery:
    """Read a verified body; raise UnusablePayloadError when it is not a Jira event."""
    try:
        payload = json.loads(body)
    except ValueError as exc:  # bad UTF-8 or JSON, or a number of over 4,300 digits
        raise UnusablePayloadError(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("webhookEvent"), str):
        raise UnusablePayloadError("JSON has no webhookEvent")
    # Without Jira's identifier, the body itself identifies a retry.
    delivery_id = identifier or "sha256:" + hashlib.sha256(body).hexdigest()
    return Delivery(delivery_id, storable(payload["webhookEvent"]), payload)


async def apply(connection: Connection, delivery: Delivery, ttl: float) -> Outcome:
    """Dedupe and apply one delivery in one transaction."""
    if delivery.event in FULL_ISSUE_EVENTS and not moved_from(delivery.payload):
        return await _apply_plain_update(connection, delivery, ttl)
    async with connection.transaction():
        if not await deliveries.record_delivery(connection, delivery.id, delivery.event):
            return "duplicate"
        if delivery.event in FULL_ISSUE_EVENTS:
            return await _apply_issue(connection, delivery.payload, ttl)
        if delivery.event == DELETE_EVENT:
            return await _apply_delete(connection, delivery.payload)
        return await _apply_other(connection, delivery.payload)


async def _apply_plain_update(connection: Connection, delivery: Delivery, ttl: float) -> Outcome:
    """The common case, most of Jira's traffic: one statement, one round trip."""
    issue = _issue_of(delivery.payload)
    outcome = await store.apply_issue_event(connection, issue, delivery.id, delivery.event, ttl)
    if outcome is None:
        return "duplicate"
    return "stale" if outcome == "stale" else "applied"


def _issue_of(payload: dict[str, Any]) -> Issue:
    try:
        return normalize_issue(payload.get("issue"))
    except InvalidIssueError as exc:
        raise UnusablePayloadError(str(exc)) from None


async def _apply_issue(connection: Executor, payload: dict[str, Any], ttl: float) -> Outcome:
    issue = _issue_of(payload)
    outcome = (await store.upsert_issues(connection, [issue], "webhook"))[issue.id]
    old_keys = [key for key in moved_from(payload) if key != issue.key]
    await store.add_aliases(connection, dict.fromkeys(old_keys, issue.id))
    if old_keys:
        keys = await store.keys_of(connection, issue.id)
        await tracking.retarget(connection, keys, issue.key, ttl)
    return "stale" if outcome == "stale" else "applied"


async def _apply_delete(connection: Executor, payload: dict[str, Any]) -> Outcome:
    named = named_issue(payload)
    if named is None:
        raise UnusablePayloadError("jira:issue_deleted names no issue id and key")
    await store.mark_deleted(connection, named[0], named[1], event_time(payload))
    return "applied"


async def _apply_other(connection: Executor, payload: dict[str, Any]) -> Outcome:
    named = named_issue(payload)
    if named is None:
        return "ignored"
    # Comments and the like name an issue without its fields: read it soon, write nothing.
    keys = await store.keys_of(connection, named[0]) or [named[1]]
    return "due" if await tracking.make_due(connection, keys) else "ignored"


def forget_locally(memo: Memo | None, payload: dict[str, Any]) -> None:
    # PostgreSQL tells every replica; this makes this one's next read see the change at once.
    if memo is not None and (named := named_issue(payload)) is not None:
        memo.drop([named[0]])


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


def named_issue(payload: dict[str, Any]) -> tuple[int, str] | None:
    issue = payload.get("issue")
    if not isinstance(issue, dict):
        return None
    try:
        return int(str(issue.get("id"))), normalize_key(str(issue.get("key")))
    except ValueError:
        return None


def event_time(payload: dict[str, Any]) -> datetime:
    stamp = payload.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        with contextlib.suppress(OverflowError, ValueError, OSError):  # not a time at all
            return datetime.fromtimestamp(stamp / 1000, UTC)
    return datetime.now(UTC)


async def receive(request: Request) -> Response:
    metrics: Metrics = request.state.metrics
    try:
        event, outcome = await _receive(request)
    except ApiError as exc:
        if exc.status == 401:
            metrics.signature_failures.labels(exc.code).inc()
        metrics.webhooks.labels("unknown", "rejected").inc()
        raise
    metrics.webhooks.labels(event, outcome).inc()
    return JSONResponse({"outcome": outcome})


async def _receive(request: Request) -> tuple[str, Outcome]:
    settings: Settings = request.state.settings
    if not settings.webhook_secret:
        raise ApiError(403, "webhooks_disabled", "set JIRA_WEBHOOK_SECRET to accept webhooks")
    body = await read_body(request, settings.webhook_max_body_bytes)
    verify(
        body,
        request.headers.get("x-hub-signature"),
        request.query_params.get("secret"),
        settings.webhook_secret,
    )
    identifier = request.headers.get("x-atlassian-webhook-identifier")
    try:
        delivery = parse(body, identifier)
        async with request.state.pool.acquire() as connection:
            outcome = await apply(connection, delivery, settings.cache_ttl)
        forget_locally(request.state.memo, delivery.payload)
    except UnusablePayloadError as exc:
        await deliveries.add_dead_letter(request.state.pool, identifier, str(exc), readable(body))
        raise ApiError(400, "unusable_payload", str(exc)) from None
    # Label values stay few: Jira's event names, or "other" for anything unexpected.
    return (delivery.event if delivery.event in KNOWN_EVENTS else "other"), outcome


async def get_dead_letters(request: Request) -> Response:
    limit = request.query_params.get("limit", "50")
    # Not str.isdigit(), which admits "²", nor a length that int() refuses.
    if not re.fullmatch("[0-9]{1,4}", limit) or not 1 <= int(limit) <= 1000:
        raise ApiError(400, "invalid_limit", "limit must be a whole number from 1 to 1000")
    letters = await deliveries.list_dead_letters(request.state.pool, int(limit))
    return JSONResponse(
        {
            "dead_letters": [
                {
                    "id": letter.id,
                    "delivery_id": letter.delivery_id,
                    "error": letter.error,
                    "received_at": letter.received_at.isoformat(),
                    "body": letter.body,
                }
                for letter in letters
            ]
        }
    )


def readable(body: bytes) -> str:
    """The body as text PostgreSQL can keep, which holds no NUL."""
    return body.decode("utf-8", "replace").replace("\x00", "\ufffd")


routes = [
    Route("/webhooks/jira", receive, methods=["POST"]),
    Route("/webhooks/dead-letters", get_dead_letters, methods=["GET"]),
]


async def read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"webhook body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
