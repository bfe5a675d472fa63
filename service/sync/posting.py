"""One signed POST of a change-log entry to a subscriber, and what its answer means.

Signed twice: per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
HMAC-SHA256 over `id.timestamp.body`, so that a receiver rejects a replayed delivery by its
age), and as before with `X-Hub-Signature` over the body alone, for receivers written
against it. What a failure records is only its class (no answer; answered 4xx or 5xx):
an error that told a closed port from an open one would map the network behind a target.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

import aiohttp

from service.jira.pacing import parse_retry_after
from service.jira.transport import USER_AGENT

# 4xx answers that say "not now" rather than "never": retried like 5xx. Any other 4xx (and
# a redirect, which is not followed: it could lead anywhere) refuses the entry for good,
# and the subscription pauses at once, saying why.
RETRIED_4XX = frozenset({408, 409, 425, 429})
LONGEST_RETRY_AFTER = 3600.0
NO_ANSWER = "no answer (not reachable, or not within SUBSCRIPTION_TIMEOUT)"


class DeliveryError(Exception):
    """The subscriber did not take the entry; `retry` says whether trying again may help."""

    def __init__(self, problem: str, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.retry = retry
        self.retry_after = retry_after


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature value: HMAC-SHA256 of the raw body, as Jira signs towards us."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks key: the bytes a `whsec_` secret encodes. A secret made before
    (not `whsec_`) signs with its own bytes: its `whsec_` form is `whsec_` + base64 of it."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except binascii.Error:
            pass
    return secret.encode()


def sign_standard(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value: `v1,<base64>` per secret, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(signing_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets
    )


def headers(secrets: list[str], body: bytes, delivery_id: str, now: float) -> dict[str, str]:
    """Both signatures; the first secret is the current one (X-Hub-Signature's)."""
    timestamp = int(now)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secrets, delivery_id, timestamp, body),
        "X-Hub-Signature": sign(secrets[0], body),
        "X-Delivery-Id": delivery_id,
    }


def open_session(timeout: float) -> aiohttp.ClientSession:
    """The process's session for subscribers; call inside the running loop (the lifespan)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), headers=headers)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, secrets: list[str], delivery_id: str
) -> None:
    """POST the entry, signed now; raise DeliveryError unless the subscriber answered 2xx."""
    signed = headers(secrets, body, delivery_id, time.time())
    try:
        async with session.post(url, data=body, headers=signed, allow_redirects=False) as answer:
            status, retry_after = answer.status, answer.headers.get("Retry-After")
    except (TimeoutError, aiohttp.ClientError):
        # One message for a refused connection, a reset and a timeout alike.
        raise DeliveryError(NO_ANSWER, retry=True) from None
    if 200 <= status < 300:
        return
    kind = f"{status // 100}xx"
    if status in RETRIED_4XX or status >= 500:
        wait = parse_retry_after(retry_after)
        wait = None if wait is None else min(wait, LONGEST_RETRY_AFTER)
        raise DeliveryError(f"answered {kind}", retry=True, retry_after=wait)
    raise DeliveryError(f"answered {kind}, which is not retried", retry=False)
