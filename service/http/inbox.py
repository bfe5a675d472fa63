"""HTTP routes of the webhook: Jira's deliveries in, and the dead letters out to admins."""

from __future__ import annotations

from typing import get_args

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import Settings
from service.http.bodies import read_body
from service.http.errors import (
    ApiError,
    DeadLetterNotFound,
    ErrorCode,
    UnusablePayload,
    WebhooksDisabled,
)
from service.http.params import whole_param
from service.http.responses import ShapedResponse
from service.http.services import services
from service.metrics import Metrics
from service.shapes import DeadLetter, DeadLetters, shape_letter
from service.storage import inbox
from service.sync.inbox import (
    Outcome,
    Received,
    Receiver,
    SignatureError,
    UnusablePayloadError,
)

# A page of dead letters stops once its bodies and errors pass this many bytes.
PAGE_BYTES = 256 * 1024
MAX_LIMIT = 1000
# The answers, encoded once.
_ANSWERS = {outcome: msgspec.json.encode({"outcome": outcome}) for outcome in get_args(Outcome)}


async def receive(request: Request) -> Response:
    """Jira's delivery: one domain call, whose outcome or refusal maps to HTTP here."""
    metrics: Metrics = services(request).metrics
    try:
        event, outcome = await _receive(request)
    except ApiError as exc:
        if exc.status == 401:
            metrics.signature_failures.labels(exc.code).inc()
        metrics.webhooks.labels("unknown", "rejected").inc()
        raise
    metrics.webhooks.labels(event, outcome).inc()
    return Response(_ANSWERS[outcome], media_type="application/json")


async def _receive(request: Request) -> tuple[str, Outcome]:
    settings: Settings = services(request).settings
    receiver: Receiver | None = services(request).receiver
    if receiver is None:
        raise WebhooksDisabled()
    body = await read_body(request, settings.webhook_max_body_bytes, "webhook body")
    headers = request.headers
    received = Received(
        body,
        headers.get("x-hub-signature"),
        request.query_params.get("secret") if request.scope["query_string"] else None,
        headers.get("x-atlassian-webhook-identifier"),
    )
    try:
        return await receiver.handle(received)
    except SignatureError as exc:
        raise ApiError(401, ErrorCode(exc.code), str(exc)) from None
    except UnusablePayloadError as exc:
        services(request).metrics.dead_letters.inc()
        raise UnusablePayload(str(exc)) from None


async def list_dead_letters(request: Request) -> Response:
    """The newest letters first, bodies cut short, a page within PAGE_BYTES; `next` pages on."""
    query = request.query_params
    limit = whole_param(query, "limit", ErrorCode.INVALID_LIMIT, default=50, high=MAX_LIMIT)
    before = query.get("before")
    cursor = None if before is None else whole_param(query, "before", ErrorCode.INVALID_CURSOR)
    letters = await inbox.list_dead_letters(services(request).pool, limit + 1, cursor)
    page: list[DeadLetter] = []
    size = 0
    for letter in letters[:limit]:
        if page and size > PAGE_BYTES:
            break
        page.append(shape_letter(letter))
        size += len(letter.body.encode()) + len(letter.error.encode())
    more = len(page) < len(letters)
    return ShapedResponse(DeadLetters(page, page[-1].id if more else None))


async def get_dead_letter(request: Request) -> Response:
    """One letter with its whole body."""
    letter_id = whole_param(request.path_params, "id", ErrorCode.INVALID_ID)
    letter = await inbox.get_dead_letter(services(request).pool, letter_id)
    if letter is None:
        raise DeadLetterNotFound(letter_id)
    return ShapedResponse(shape_letter(letter))


# Jira cannot send our tokens: the receiver proves each delivery by the webhook's own secret.
delivery_routes = [Route("/webhooks/jira", receive, methods=["POST"])]
# Dead letters hold Jira content (summaries, names): app.py opens them to admin tokens only.
letter_routes = [
    Route("/webhooks/dead-letters", list_dead_letters, methods=["GET"]),
    Route("/webhooks/dead-letters/{id}", get_dead_letter, methods=["GET"]),
]
