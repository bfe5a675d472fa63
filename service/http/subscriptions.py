"""HTTP routes of subscriptions: create (secret shown once), list, show with lag, delete, resume."""

from __future__ import annotations

import fnmatch
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.http.errors import INVALID_ID, ApiError
from service.http.webhook import whole_number
from service.model import check_project_id, normalize_key, render_time
from service.storage import changes, subscriptions
from service.storage.changes import Filter
from service.storage.subscriptions import Lag, Subscription
from service.sync.subscribers import Deliveries

FIELDS = ("key", "status", "summary", "assignee", "priority", "state")
MAX_URL = 2048


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
    }
    if lag is not None:
        shown["lag"] = {"entries": lag.entries, "seconds": round(lag.seconds, 3)}
    return shown


def _time(value: Any) -> str | None:
    return None if value is None else render_time(value)


def check_url(url: Any, allowed: frozenset[str]) -> str:
    """An http(s) URL whose host SUBSCRIPTION_ALLOWED_HOSTS allows; else a 400 saying why."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise ApiError(
            400,
            "invalid_url",
            f"url must be an http:// or https:// URL of at most {MAX_URL} characters",
        )
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        host, parts = "", urlsplit("")
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise ApiError(400, "invalid_url", "url must be an http:// or https:// URL with a host")
    if not allowed:
        raise ApiError(
            400,
            "host_not_allowed",
            "no subscription can be created until the operator sets SUBSCRIPTION_ALLOWED_HOSTS",
        )
    if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowed):
        raise ApiError(400, "host_not_allowed", f"{host!r} is not in SUBSCRIPTION_ALLOWED_HOSTS")
    return url


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
    url, only, fields = parse_request(await request.body(), request.state.settings)
    pool = request.state.pool
    secret = secrets.token_urlsafe(32)
    start = await changes.current_cursor(pool)  # from now: what changes after creation
    subscription = await subscriptions.create(pool, url, secret, only, fields, start)
    _nudge(request)
    return JSONResponse(render(subscription) | {"secret": secret}, status_code=201)


async def list_subscriptions(request: Request) -> Response:
    found = await subscriptions.listed(request.state.pool)
    return JSONResponse({"subscriptions": [render(subscription) for subscription in found]})


async def get_subscription(request: Request) -> Response:
    subscription = await _find(request)
    lag = await subscriptions.lag(request.state.pool, subscription)
    return JSONResponse(render(subscription, lag))


async def delete_subscription(request: Request) -> Response:
    subscription_id = _id(request)
    if not await subscriptions.delete(request.state.pool, subscription_id):
        raise SubscriptionNotFound(subscription_id)
    return Response(status_code=204)


async def resume_subscription(request: Request) -> Response:
    subscription_id = _id(request)
    subscription = await subscriptions.resume(request.state.pool, subscription_id)
    if subscription is None:
        raise SubscriptionNotFound(subscription_id)
    _nudge(request)
    return JSONResponse(render(subscription))


async def _find(request: Request) -> Subscription:
    subscription_id = _id(request)
    subscription = await subscriptions.find(request.state.pool, subscription_id)
    if subscription is None:
        raise SubscriptionNotFound(subscription_id)
    return subscription


def _id(request: Request) -> int:
    return whole_number(request, "id", "", INVALID_ID, source="path")


def _nudge(request: Request) -> None:
    deliveries: Deliveries | None = request.state.deliveries
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
]
