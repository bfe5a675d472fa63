"""One signed POST of a change-log entry to a subscriber, and what its answer means."""

from __future__ import annotations

import hashlib
import hmac

import aiohttp

from service.jira.pacing import parse_retry_after
from service.jira.transport import USER_AGENT

# 4xx answers that say "not now" rather than "never": retried like 5xx. Any other 4xx (and
# a redirect, which is not followed: it could lead anywhere) refuses the entry for good,
# and the subscription pauses at once, saying why.
RETRIED_4XX = frozenset({408, 409, 425, 429})
LONGEST_RETRY_AFTER = 3600.0


class DeliveryError(Exception):
    """The subscriber did not take the entry; `retry` says whether trying again may help."""

    def __init__(self, problem: str, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.retry = retry
        self.retry_after = retry_after


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature value: HMAC-SHA256 of the raw body, as Jira signs towards us."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def open_session(timeout: float) -> aiohttp.ClientSession:
    """The process's session for subscribers; call inside the running loop (the lifespan)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), headers=headers)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, secret: str, delivery_id: str
) -> None:
    """POST the entry; raise DeliveryError unless the subscriber answered 2xx."""
    headers = {"X-Hub-Signature": sign(secret, body), "X-Delivery-Id": delivery_id}
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as answer:
            status, retry_after = answer.status, answer.headers.get("Retry-After")
    except TimeoutError:
        raise DeliveryError("no answer within SUBSCRIPTION_TIMEOUT", retry=True) from None
    except aiohttp.ClientError as exc:
        raise DeliveryError(f"could not POST: {type(exc).__name__}", retry=True) from None
    if 200 <= status < 300:
        return
    if status in RETRIED_4XX or status >= 500:
        wait = parse_retry_after(retry_after)
        wait = None if wait is None else min(wait, LONGEST_RETRY_AFTER)
        raise DeliveryError(f"answered {status}", retry=True, retry_after=wait)
    raise DeliveryError(f"answered {status}, which is not retried", retry=False)
