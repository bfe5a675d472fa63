"""HTTP routes of subscriptions: create (secret shown once), list, show with lag, delete, resume,
rotate the secret. A client sees and changes only its own (admin: every one); another's is 404.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.http.clients import Client
from service.http.errors import INVALID_ID, RATE_LIMITED, ApiError, TooMany
from service.http.middleware import caller
from service.http.services import services
from service.http.webhook import whole_number
from service.model import check_project_id, normalize_key, render_time
from service.storage import changes, subscriptions
from service.storage.changes import Filter
from service.storage.subscriptions import EVERYONE, Lag, Subscription, Viewer
from service.sync.subscribers import Deliveries
from service.sync.targets import TargetRefusedError, check_target

FIELDS = ("key", "status", "summary", "assignee", "priority", "state")
SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64


class SubscriptionLimit(ApiError):
    def __init__(self, client: str, limit: int) -> None:
        message = (
            f"client {client!r} holds {limit} subscriptions, its limit"
            " (CLIENT_MAX_SUBSCRIPTIONS); delete one first"
        )
        super().__init__(409, "subscription_limit", message)


class SubscriptionNotFound(ApiError):
    def __init__(self, subscription_id: int) -> None:
        message = f"no subscription has the id {subscription_id}"
        super().__init__(404, "subscription_not_found", message)


def render(subscription: Subscription, lag: Lag | None = None) -> dict[str, Any]:
    """A subscription as the API shows it: never its secret."""
    shown: dict[str, Any] = {
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
    if lag is not None:
        shown["lag"] = {"entries": lag.entries, "seconds": round(lag.seconds, 3)}
    return shown


def _time(value: Any) -> str | None:
    return None if value is None else render_time(value)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_url(url: Any, allowed: frozenset[str]) -> str:
    """A URL SUBSCRIPTION_ALLOWED_HOSTS allows (sync/targets); else a 400 saying why."""
    try:
        return check_target(url, allowed)
    except TargetRefusedError as exc:
        raise ApiError(400, exc.code, str(exc)) from None


def parse_request(body: bytes, settings: Settings) -> tuple[str, Filter, list[str] | None]:
    try:
        asked = json.loads(body)
    except ValueError:
        asked = None
    if not isinstance(asked, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object with a url")
    unknown = set(asked) - {"url", "project_id", "keys", "fields"}
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown members: {', '.join(sorted(unknown))}")
    url = check_url(asked.get("url"), settings.subscription_allowed_hosts)
    project_id = asked.get("project_id")
    if project_id is not None:
        project_id = check_project_id(_text(project_id, "project_id"))
    return url, Filter(project_id, _keys(asked.get("keys"), settings)), _fields(asked.get("fields"))


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "invalid_body", f"{name} must be a string")
    return value


def _keys(value: Any, settings: Settings) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= settings.max_batch_keys:
        limit = settings.max_batch_keys
        raise ApiError(400, "invalid_body", f"keys must be a list of 1 to {limit} issue keys")
    return list(dict.fromkeys(normalize_key(_text(key, "each key")) for key in value))


def _fields(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not set(value) <= set(FIELDS):
        raise ApiError(400, "invalid_body", f"fields must be a list of some of {', '.join(FIELDS)}")
    return list(dict.fromkeys(value))


async def create_subscription(request: Request) -> Response:
    found, client = services(request), caller(request)
    url, only, fields = parse_request(await request.body(), found.settings)
    wait = 0.0 if client is None else found.clients.admit_subscribing(client)
    if wait > 0:
        message = "subscriptions are made at most CLIENT_SUBSCRIBE_RATE a minute per client"
        raise TooMany(RATE_LIMITED, message, wait)
    secret = new_secret()
    start = await changes.current_cursor(found.pool)  # from now: what changes after creation
    limit = None if client is None else found.clients.subscription_limit(client)
    owner = _owner(client)
    subscription = await subscriptions.create(
        found.pool, url, secret, only, fields, start, owner, limit
    )
    if subscription is None:
        raise SubscriptionLimit(owner or "", limit or 0)
    _nudge(request)
    return JSONResponse(render(subscription) | {"secret": secret}, status_code=201)


async def list_subscriptions(request: Request) -> Response:
    found = await subscriptions.listed(services(request).pool, _viewer(request))
    return JSONResponse({"subscriptions": [render(subscription) for subscription in found]})


async def get_subscription(request: Request) -> Response:
    subscription = await _find(request)
    lag = await subscriptions.lag(services(request).pool, subscription)
    return JSONResponse(render(subscription, lag))


async def delete_subscription(request: Request) -> Response:
    subscription_id = _id(request)
    if not await subscriptions.delete(services(request).pool, subscription_id, _viewer(request)):
        raise SubscriptionNotFound(subscription_id)
    return Response(status_code=204)


async def resume_subscription(request: Request) -> Response:
    """Resume from where it stopped, if its target is still allowed (else it stays paused)."""
    found, subscription = services(request), await _find(request)
    try:
        check_target(subscription.url, found.settings.subscription_allowed_hosts)
    except TargetRefusedError as exc:
        reason = f"target no longer allowed: {exc}"
        await subscriptions.pause(found.pool, subscription.id, reason)
        raise ApiError(400, exc.code, f"not resumed: {reason}") from None
    resumed = await subscriptions.resume(found.pool, subscription.id, _viewer(request))
    if resumed is None:
        raise SubscriptionNotFound(subscription.id)
    _nudge(request)
    return JSONResponse(render(resumed))


async def rotate_secret(request: Request) -> Response:
    """A new secret, shown once; the old one signs too until SUBSCRIPTION_SECRET_OVERLAP ends."""
    found, subscription_id, secret = services(request), _id(request), new_secret()
    overlap = found.settings.subscription_secret_overlap
    rotated = await subscriptions.rotate(
        found.pool, subscription_id, _viewer(request), secret, overlap
    )
    if rotated is None:
        raise SubscriptionNotFound(subscription_id)
    return JSONResponse(render(rotated) | {"secret": secret})


async def _find(request: Request) -> Subscription:
    subscription_id = _id(request)
    viewer = _viewer(request)
    subscription = await subscriptions.find(services(request).pool, subscription_id, viewer)
    if subscription is None:
        raise SubscriptionNotFound(subscription_id)
    return subscription


def _viewer(request: Request) -> Viewer:
    """Admin (and an open API) sees every subscription; any other client its own."""
    client = caller(request)
    if client is None or client.allows("admin"):
        return EVERYONE
    return Viewer(client.name, client.legacy)


def _owner(client: Client | None) -> str | None:
    """Who owns what a client makes: nobody while the API is open (no tokens at all)."""
    return None if client is None or client.name == "anonymous" else client.name


def _id(request: Request) -> int:
    return whole_number(request, "id", "", INVALID_ID, source="path")


def _nudge(request: Request) -> None:
    deliveries: Deliveries | None = services(request).deliveries
    if deliveries is not None:
        deliveries.nudge()


async def subscriptions_route(request: Request) -> Response:
    # One route per path, so that a wrong method answers 405 with every allowed one.
    if request.method == "POST":
        return await create_subscription(request)
    return await list_subscriptions(request)


async def subscription_route(request: Request) -> Response:
    if request.method == "DELETE":
        return await delete_subscription(request)
    return await get_subscription(request)


routes = [
    Route("/subscriptions", subscriptions_route, methods=["GET", "POST"]),
    Route("/subscriptions/{id}", subscription_route, methods=["GET", "DELETE"]),
    Route("/subscriptions/{id}/resume", resume_subscription, methods=["POST"]),
    Route("/subscriptions/{id}/rotate-secret", rotate_secret, methods=["POST"]),
]
