"""Webhook delivery as Jira Cloud does it: signed, retried, and now and then out of order."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from .options import SimOptions
from .state import SimIssue

# Jira Cloud retries on these and on 5xx, timeouts and connection failures; never on other 4xx.
RETRY_STATUSES = frozenset({408, 409, 425, 429})


@dataclass(slots=True)
class Switches:
    """Delivery trouble: drop (by chance or the next N), duplicate, hold-and-reverse, delay."""

    drop_probability: float = 0.0
    drop_next: int = 0
    duplicate_next: int = 0
    reorder: bool = False
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where one webhook posts: its URL (with any ?secret=), and the secret it signs with."""

    url: URL
    secret: str | None = field(default=None, repr=False)


# Which webhooks an event of an issue reaches: the registry's answer.
Targets = Callable[[str, SimIssue | None], list[Target]]


@dataclass(frozen=True, slots=True)
class Delivery:
    identifier: str
    event: str
    key: str | None
    body: bytes
    target: Target


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST to the receiver: which delivery, which retry, and what came back."""

    identifier: str
    event: str
    key: str | None
    retry: int
    status: int | None
    error: str | None
    at: float


class Deliverer:
    """Owns the outgoing ClientSession and the background tasks that deliver and retry."""

    def __init__(self, options: SimOptions, targets: Targets) -> None:
        self.options = options
        self.targets = targets
        self.switches = Switches()
        self.events: list[dict[str, Any]] = []
        self.attempts: list[Attempt] = []
        self.dropped: list[Delivery] = []
        self._held: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._random = random.Random(options.seed)  # noqa: S311 -- chaos, not secrets

    def send(self, payload: dict[str, Any], issue: SimIssue | None = None) -> list[Delivery]:
        """Record the event and deliver it in the background to each webhook it matches."""
        self.events.append(payload)
        targets = self.targets(payload["webhookEvent"], issue)
        deliveries = [_delivery(payload, target) for target in targets]
        for delivery in deliveries:
            if self._should_drop():
                self.dropped.append(delivery)
            elif self.switches.reorder:
                self._held.append(delivery)
            else:
                self._launch(self._deliver(delivery))
        return deliveries

    @property
    def held(self) -> list[Delivery]:
        """Deliveries kept back by the reorder switch until released, oldest first."""
        return list(self._held)

    def release(self) -> None:
        """Deliver held webhooks newest first, one after another."""
        held, self._held = self._held, []
        if held:
            self._launch(self._deliver_all(list(reversed(held))))

    async def drain(self) -> None:
        """Wait until every queued delivery, retries included, has finished."""
        self.release()
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _launch(self, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _should_drop(self) -> bool:
        if self.switches.drop_next > 0:
            self.switches.drop_next -= 1
            return True
        return self._random.random() < self.switches.drop_probability

    async def _deliver_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery) -> None:
        await asyncio.sleep(self.switches.delay)
        copies = 1
        if self.switches.duplicate_next > 0:
            self.switches.duplicate_next -= 1
            copies = 2
        for _ in range(copies):
            await self._deliver_with_retries(delivery)

    async def _deliver_with_retries(self, delivery: Delivery) -> None:
        for retry in range(self.options.webhook_max_tries):
            if retry:
                await asyncio.sleep(self.options.webhook_backoff * 2 ** (retry - 1))
            if not await self._attempt(delivery, retry):
                return

    async def _attempt(self, delivery: Delivery, retry: int) -> bool:
        """POST once; True if Jira would try again."""
        status, error = None, None
        try:
            status = await self._post(delivery, retry)
        except (aiohttp.ClientError, TimeoutError) as failure:
            error = f"{type(failure).__name__}: {failure}"
        self.attempts.append(
            Attempt(
                delivery.identifier,
                delivery.event,
                delivery.key,
                retry,
                status,
                error,
                time.monotonic(),
            )
        )
        return status is None or status in RETRY_STATUSES or status >= 500

    async def _post(self, delivery: Delivery, retry: int) -> int:
        timeout = aiohttp.ClientTimeout(total=self.options.webhook_timeout)
        session = self._client()
        headers = self._headers(delivery, retry)
        async with session.post(
            delivery.target.url, data=delivery.body, headers=headers, timeout=timeout
        ) as reply:
            await reply.read()
            return reply.status

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _headers(self, delivery: Delivery, retry: int) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Atlassian Webhook HTTP Client",
            "X-Atlassian-Webhook-Identifier": delivery.identifier,
            "X-Atlassian-Webhook-Flow": "Primary",
        }
        if retry:
            headers["X-Atlassian-Webhook-Retry"] = str(retry)
        secret = delivery.target.secret
        if secret:
            headers["X-Hub-Signature"] = "sha256=" + sign(secret, delivery.body)
        return headers


def sign(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of the raw body, as in `X-Hub-Signature: sha256=<hex>`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def configured_target(options: SimOptions) -> Target | None:
    """The webhook set by --webhook-url: signed, or with the secret in its URL instead."""
    if not options.webhook_url:
        return None
    url, secret = URL(options.webhook_url), options.webhook_secret
    if options.webhook_secret_in_query and secret:
        return Target(url.update_query(secret=secret))
    return Target(url, secret)


def _delivery(payload: dict[str, Any], target: Target) -> Delivery:
    issue = payload.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Delivery(str(uuid.uuid4()), payload["webhookEvent"], key, body, target)
