"""HTTP routes of subscriptions: create (secret shown once), list, show with lag, delete, resume,
rotate the secret. A client sees and changes only its own (admin: every one); another's is 404.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import Settings
from service.http.bodies import decode, read_body
from service.http.clients import Client
from service.http.errors import ApiError, ErrorCode, TooMany
from service.http.middleware import caller
from service.http.params import whole_param
from service.http.responses import ShapedResponse
from service.http.services import services
from service.model import check_project_id, normalize_key
from service.shapes import changes as shapes
from service.storage import changes, subscriptions
from service.storage.changes import Filter
from service.storage.subscriptions import EVERYONE, Subscription, Viewer
from service.sync.subscribers import Deliveries
from service.sync.targets import TargetRefusedError, check_target

SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64
MAX_BODY = 64 * 1024  # far above any valid request: a URL and 500 keys
# The code of a 400 for a body member that does not fit its shape; others are invalid_body.
BODY_CODES = {
    "url": ErrorCode.INVALID_URL,
    "project_id": ErrorCode.INVALID_PROJECT_ID,
    "keys": ErrorCode.INVALID_KEY,
}


class SubscriptionLimit(ApiError):
    def __init__(self, client: str, limit: int) -> None:
        message = (
            f"client {client!r} holds {limit} subscriptions, its limit"
            " (CLIENT_MAX_SUBSCRIPTIONS); delete one first"
        )
        super().__init__(409, ErrorCode.SUBSCRIPTION_LIMIT, message)


class SubscriptionNotFound(ApiError):
    def __init__(self, subscription_id: int) -> None:
        message = f"no subscription has the id {subscription_id}"
        super().__init__(404, ErrorCode.SUBSCRIPTION_NOT_FOUND, message)


def render(subscription: Subscription) -> shapes.Subscription:
    """A subscription as the API shows it: never its secret."""
    return shapes.Subscription(**shapes.shape_subscription(subscription))


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_url(url: Any, allowed: frozenset[str]) -> str:
    """A URL SUBSCRIPTION_ALLOWED_HOSTS allows (sync/targets); else a 400 saying why."""
    try:
        return check_target(url, allowed)
    except TargetRefusedError as exc:
        raise ApiError(400, ErrorCode(exc.code), str(exc)) from None


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
    found, client = services(request), caller(request)
    url, only, fields = parse_request(await read_body(request, MAX_BODY), found.settings)
    wait = 0.0 if client is None else found.clients.admit_subscribing(client)
    if wait > 0:
        message = "subscriptions are made at most CLIENT_SUBSCRIBE_RATE a minute per client"
        raise TooMany(ErrorCode.RATE_LIMITED, message, wait)
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
    shown = shapes.NewSubscription(**shapes.shape_subscription(subscription), secret=secret)
    return ShapedResponse(shown, status_code=201)


async def list_subscriptions(request: Request) -> Response:
    found = await subscriptions.listed(services(request).pool, _viewer(request))
    return ShapedResponse(shapes.Subscriptions([render(subscription) for subscription in found]))


async def get_subscription(request: Request) -> Response:
    subscription = await _find(request)
    lag = await subscriptions.lag(services(request).pool, subscription)
    shown = shapes.shape_subscription(subscription)
    lagging = shapes.Lag(lag.entries, round(lag.seconds, 3))
    return ShapedResponse(shapes.SubscriptionStatus(**shown, lag=lagging))


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
        raise ApiError(400, ErrorCode(exc.code), f"not resumed: {reason}") from None
    resumed = await subscriptions.resume(found.pool, subscription.id, _viewer(request))
    if resumed is None:
        raise SubscriptionNotFound(subscription.id)
    _nudge(request)
    return ShapedResponse(render(resumed))


async def rotate_secret(request: Request) -> Response:
    """A new secret, shown once; the old one signs too until SUBSCRIPTION_SECRET_OVERLAP ends."""
    found, subscription_id, secret = services(request), _id(request), new_secret()
    overlap = found.settings.subscription_secret_overlap
    rotated = await subscriptions.rotate(
        found.pool, subscription_id, _viewer(request), secret, overlap
    )
    if rotated is None:
        raise SubscriptionNotFound(subscription_id)
    shown = shapes.NewSubscription(**shapes.shape_subscription(rotated), secret=secret)
    return ShapedResponse(shown)


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
    return whole_param(request.path_params, "id", ErrorCode.INVALID_ID)


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
