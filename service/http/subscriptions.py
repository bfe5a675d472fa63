"""HTTP routes of subscriptions: create (secret shown once), list, show with lag, delete, resume."""

from __future__ import annotations

import fnmatch
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import Settings
from service.http.bodies import decode, read_body
from service.http.errors import ApiError, ErrorCode
from service.http.params import whole_param
from service.http.responses import ShapedResponse
from service.model import check_project_id, normalize_key
from service.shapes import changes as shapes
from service.storage import changes, subscriptions
from service.storage.changes import Filter
from service.storage.subscriptions import Subscription
from service.sync.subscribers import Deliveries

MAX_URL = shapes.MAX_URL
MAX_BODY = 64 * 1024  # far above any valid request: a URL and 500 keys
# The code of a 400 for a body member that does not fit its shape; others are invalid_body.
BODY_CODES = {
    "url": ErrorCode.INVALID_URL,
    "project_id": ErrorCode.INVALID_PROJECT_ID,
    "keys": ErrorCode.INVALID_KEY,
}


class SubscriptionNotFound(ApiError):
    def __init__(self, subscription_id: int) -> None:
        message = f"no subscription has the id {subscription_id}"
        super().__init__(404, ErrorCode.SUBSCRIPTION_NOT_FOUND, message)


def render(subscription: Subscription) -> shapes.Subscription:
    """A subscription as the API shows it: never its secret."""
    return shapes.Subscription(**shapes.shape_subscription(subscription))


def check_url(url: Any, allowed: frozenset[str]) -> str:
    """An http(s) URL whose host SUBSCRIPTION_ALLOWED_HOSTS allows; else a 400 saying why."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise ApiError(
            400,
            ErrorCode.INVALID_URL,
            f"url must be an http:// or https:// URL of at most {MAX_URL} characters",
        )
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        host, parts = "", urlsplit("")
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise ApiError(
            400, ErrorCode.INVALID_URL, "url must be an http:// or https:// URL with a host"
        )
    if not allowed:
        raise ApiError(
            400,
            ErrorCode.HOST_NOT_ALLOWED,
            "no subscription can be created until the operator sets SUBSCRIPTION_ALLOWED_HOSTS",
        )
    if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowed):
        raise ApiError(
            400, ErrorCode.HOST_NOT_ALLOWED, f"{host!r} is not in SUBSCRIPTION_ALLOWED_HOSTS"
        )
    return url


def parse_request(body: bytes, settings: Settings) -> tuple[str, Filter, list[str] | None]:
    asked = decode(body, shapes.SubscriptionRequest, BODY_CODES)
    url = check_url(asked.url, settings.subscription_allowed_hosts)
    project_id = None if asked.project_id is None else check_project_id(asked.project_id)
    keys = None
    if asked.keys is not None:
        keys = list(dict.fromkeys(normalize_key(key) for key in asked.keys))
    fields = None if asked.fields is None else list(dict.fromkeys(map(str, asked.fields)))
    return url, Filter(project_id, keys), fields


async def create_subscription(request: Request) -> Response:
    url, only, fields = parse_request(await read_body(request, MAX_BODY), request.state.settings)
    pool = request.state.pool
    secret = secrets.token_urlsafe(32)
    start = await changes.current_cursor(pool)  # from now: what changes after creation
    subscription = await subscriptions.create(pool, url, secret, only, fields, start)
    _nudge(request)
    shown = shapes.NewSubscription(**shapes.shape_subscription(subscription), secret=secret)
    return ShapedResponse(shown, status_code=201)


async def list_subscriptions(request: Request) -> Response:
    found = await subscriptions.listed(request.state.pool)
    return ShapedResponse(shapes.Subscriptions([render(subscription) for subscription in found]))


async def get_subscription(request: Request) -> Response:
    subscription = await _find(request)
    lag = await subscriptions.lag(request.state.pool, subscription)
    shown = shapes.shape_subscription(subscription)
    lagging = shapes.Lag(lag.entries, round(lag.seconds, 3))
    return ShapedResponse(shapes.SubscriptionStatus(**shown, lag=lagging))


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
    return ShapedResponse(render(subscription))


async def _find(request: Request) -> Subscription:
    subscription_id = _id(request)
    subscription = await subscriptions.find(request.state.pool, subscription_id)
    if subscription is None:
        raise SubscriptionNotFound(subscription_id)
    return subscription


def _id(request: Request) -> int:
    return whole_param(request.path_params, "id", ErrorCode.INVALID_ID)


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
