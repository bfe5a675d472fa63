"""Delivery to subscribers: leased subscriptions, one worker each, woken by the change feed.

Each process leases the subscriptions nobody holds (a row lease in PostgreSQL, renewed while
it delivers, like the poller's claims) and runs one task per leased subscription, so that a
slow or dead subscriber delays no other. A worker reads its entries after the stored cursor,
POSTs them one at a time in log order (so in order per issue), and moves the cursor past an
entry only once it was delivered: at least once. It sends nothing once its lease may have
run out, so two replicas never send a subscription's entries at the same time; a killed
replica's leases expire and another takes over from the stored cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import msgspec

from service.config import Settings
from service.jira.pacing import backoff
from service.metrics import Metrics
from service.shapes.changes import shape_change
from service.storage import changes, subscriptions
from service.storage.changes import Change, Cursor, CursorExpiredError, Page
from service.storage.subscriptions import Subscription
from service.sync import posting
from service.sync.background import task_during
from service.sync.feed import LOST, PAGE, Feed, set_within
from service.sync.leases import log_takeover, owner_id
from service.sync.targets import TargetRefusedError, check_target

log = logging.getLogger(__name__)
BACKOFF_CAP = 300.0  # seconds: the longest wait between two attempts without Retry-After
SHUTDOWN_SECONDS = 2.0  # for workers to finish the POST in flight
LEASE_MARGIN = 0.8  # of the lease: past it a worker sends nothing until renewed
# A worker whose last read had nothing for it reads again at most this often: under many
# changes it does not want, each subscription costs the database 2 reads a second, not one
# per change; its next wanted change waits at most this long.
IDLE_GAP = 0.5
# While entries flow, the cursor is stored at most this often (and at each page's end), not
# after each: a write per delivery halved the rate one subscription could take. A crash
# sends again what was answered since (at-least-once; receivers dedupe on webhook-id).
STORE_EVERY = 0.1


class Deliveries:
    """This process's delivery workers, one per subscription it holds the lease of."""

    def __init__(
        self,
        feed: Feed,
        session: aiohttp.ClientSession,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self.feed, self.pool, self.session = feed, feed.pool, session
        # The workers' turns at the database: however many subscriptions, they hold at most
        # this many of the pool's connections, and the webhook path keeps the rest.
        self.turns = asyncio.Semaphore(settings.subscription_connections)
        self.settings, self.metrics = settings, metrics
        self.owner = owner_id()
        self.stop = asyncio.Event()
        self.workers: dict[int, asyncio.Task[None]] = {}
        self._held_until: dict[int, float] = {}
        self._nudge = asyncio.Event()

    def nudge(self) -> None:
        """Look for new or resumed subscriptions now rather than at the next renewal."""
        self._nudge.set()

    async def run(self) -> None:
        """Renew and claim leases every third of a lease, or when nudged, until stopped."""
        while not self.stop.is_set():
            self._nudge.clear()
            waits = [asyncio.ensure_future(e.wait()) for e in (self.stop, self._nudge)]
            timeout = self.settings.subscription_lease / 3
            await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
            for task in waits:
                task.cancel()
            await self.tick()

    async def tick(self) -> None:
        try:
            await self._renew_and_claim()
        except LOST as exc:
            log.warning("subscription leases not renewed", extra={"error": type(exc).__name__})

    async def _renew_and_claim(self) -> None:
        lease = self.settings.subscription_lease
        for done in [i for i, task in self.workers.items() if task.done()]:
            del self.workers[done]
        held = list(self.workers)
        kept = await subscriptions.renew(self.pool, self.owner, lease, held)
        for lost in set(held) - kept:
            self.workers.pop(lost).cancel()
        self._hold(kept, lease)
        taken: list[tuple[str, str]] = []
        claimed = await subscriptions.claim(self.pool, self.owner, lease, list(kept), taken)
        log_takeover("subscriptions", taken)
        for subscription in claimed:
            self._hold({subscription.id}, lease)
            worker = asyncio.create_task(self._work(subscription))
            self.workers[subscription.id] = worker

    def _hold(self, ids: set[int], lease: float) -> None:
        until = time.monotonic() + lease * LEASE_MARGIN
        for held in ids:
            self._held_until[held] = until

    def holding(self, subscription_id: int) -> bool:
        return time.monotonic() < self._held_until.get(subscription_id, 0.0)

    async def close(self) -> None:
        """Stop, let POSTs in flight end (bounded), and hand the leases back at once."""
        self.stop.set()
        workers = list(self.workers.values())
        if workers:
            await asyncio.wait(workers, timeout=SHUTDOWN_SECONDS)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if not self._held_until:
            return  # nothing to hand back: no need to reach the database at all
        with contextlib.suppress(*LOST):
            # Bounded: with the database gone, the leases simply run out.
            await asyncio.wait_for(subscriptions.release(self.pool, self.owner), SHUTDOWN_SECONDS)

    async def _work(self, subscription: Subscription) -> None:
        # The top of a background job: whatever goes wrong is logged, and the lease runs
        # out, so that this or another replica starts the subscription again.
        try:
            await self._follow(subscription)
        except LOST as exc:
            log.warning("subscription delivery stopped", extra={"error": type(exc).__name__})
        except Exception:
            log.exception("subscription delivery failed", extra={"subscription": subscription.id})
            self._count("crashed")

    async def _follow(self, subscription: Subscription) -> None:
        """Deliver the entries after the stored cursor, as they come, until stopped or paused."""
        cursor, read_at, idle = subscription.cursor, 0.0, False
        while not self.stop.is_set():
            rest = IDLE_GAP - (time.monotonic() - read_at)
            if idle and rest > 0 and await set_within(self.stop, rest):
                return
            waiter = self.feed.waiter()  # taken before the read, so that no wake is missed
            read_at = time.monotonic()
            try:
                async with self.turns:
                    page = await changes.read_changes(self.pool, cursor, subscription.only, PAGE)
            except CursorExpiredError as exc:
                await self._fail(subscription, str(exc), pause_after=None)
                return
            # Only a filtered subscription is idle: for one that takes everything, an empty
            # read means its entry is not readable yet, and is soon.
            idle = filtered(subscription) and not any(wanted(subscription, c) for c in page.changes)
            moved = await self._deliver_page(subscription, cursor, page)
            if moved is None:
                return
            cursor = moved
            if not page.full:
                await self.feed.wait(waiter, self.stop)

    async def _deliver_page(
        self, subscription: Subscription, cursor: Cursor, page: Page
    ) -> Cursor | None:
        """Deliver the page's wanted entries in order, storing the cursor past those answered
        at most every STORE_EVERY seconds, at the page's end, and before a failure is
        recorded (a pause hands the lease back); None: stop (paused, stopped, lease gone)."""
        progress = Progress(cursor)
        for change in page.changes:
            if not wanted(subscription, change):
                continue
            if not await self._deliver(subscription, change, progress):
                return None
            progress.took(change.cursor)
            if progress.due() and not await self._store(subscription, progress):
                return None
        progress.cursor = page.next
        if not await self._store(subscription, progress):
            return None
        return page.next

    async def _store(self, subscription: Subscription, progress: Progress) -> bool:
        """Store the cursor when it moved; False when the lease was lost."""
        if not progress.moved():
            return True
        stored = await self._advance(subscription, progress.cursor, progress.delivered)
        progress.stored()
        return stored

    async def _advance(self, subscription: Subscription, cursor: Cursor, delivered: int) -> bool:
        async with self.turns:
            return await subscriptions.advance(
                self.pool, subscription.id, self.owner, cursor, delivered
            )

    async def _deliver(
        self, subscription: Subscription, change: Change, progress: Progress
    ) -> bool:
        """POST the entry until taken; False when paused, stopped or the lease is gone."""
        now = datetime.now(UTC)
        body = msgspec.json.encode(shape_change(change, self.settings.cache_ttl, now))
        delivery_id = f"{subscription.id}:{change.cursor.encode()}"
        attempt = 0
        while self.holding(subscription.id) and not self.stop.is_set():
            if not await self._allowed(subscription, progress):
                return False
            secrets = subscription.signing_secrets(datetime.now(UTC))
            try:
                await posting.post(self.session, subscription.url, body, secrets, delivery_id)
            except posting.DeliveryError as exc:
                await self._store(subscription, progress)
                pause_after = self.settings.subscription_pause_after if exc.retry else None
                if await self._fail(subscription, str(exc), pause_after):
                    return False
                self._count("retried")
                if await set_within(self.stop, self._backoff(attempt, exc.retry_after)):
                    return False
                attempt += 1
                continue
            self._count("delivered")
            return True
        await self._store(subscription, progress)  # stopping: the next owner starts after
        return False

    async def _allowed(self, subscription: Subscription, progress: Progress) -> bool:
        """Whether SUBSCRIPTION_ALLOWED_HOSTS still allows the target; if not, pause it."""
        try:
            check_target(subscription.url, self.settings.subscription_allowed_hosts)
        except TargetRefusedError as exc:
            await self._store(subscription, progress)
            reason = f"target no longer allowed: {exc}"
            async with self.turns:
                await subscriptions.pause(self.pool, subscription.id, reason)
            self._count("paused")
            log.warning("subscription paused", extra={"subscription": subscription.id})
            return False
        return True

    async def _fail(
        self, subscription: Subscription, error: str, pause_after: float | None
    ) -> bool:
        """Record the failure; answer whether to stop (paused, or no longer ours)."""
        async with self.turns:
            paused = await subscriptions.fail(
                self.pool, subscription.id, self.owner, error, pause_after
            )
        if paused:
            self._count("paused")
            log.warning(
                "subscription paused", extra={"subscription": subscription.id, "error": error}
            )
        return paused is not False

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return backoff(self.settings.subscription_backoff, BACKOFF_CAP, attempt)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.deliveries.labels(outcome).inc()


@dataclass(slots=True)
class Progress:
    """Where a worker's delivery stands against the cursor it last stored."""

    cursor: Cursor
    delivered: int = 0
    _stored: Cursor = field(init=False)
    _stored_at: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._stored = self.cursor

    def took(self, cursor: Cursor) -> None:
        self.cursor, self.delivered = cursor, self.delivered + 1

    def due(self) -> bool:
        return time.monotonic() - self._stored_at >= STORE_EVERY

    def moved(self) -> bool:
        return self.delivered > 0 or self.cursor != self._stored

    def stored(self) -> None:
        self._stored, self.delivered, self._stored_at = self.cursor, 0, time.monotonic()


def filtered(subscription: Subscription) -> bool:
    only = subscription.only
    return only.project_id is not None or only.keys is not None or subscription.fields is not None


def wanted(subscription: Subscription, change: Change) -> bool:
    """Whether the entry touches one of the subscription's fields (all, when none are named)."""
    return subscription.fields is None or not set(subscription.fields).isdisjoint(change.fields)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, feed: Feed, metrics: Metrics | None = None
) -> AsyncIterator[Deliveries | None]:
    """The process's deliveries for the lifespan; None when SUBSCRIPTIONS_DELIVER is off."""
    if not settings.subscriptions_deliver:
        yield None
        return
    async with posting.open_session(settings.subscription_timeout) as session:
        deliveries = Deliveries(feed, session, settings, metrics)
        await deliveries.tick()  # before serving: a replica starts delivering at once
        try:
            # Cancelled at the end: only lease bookkeeping, maybe waiting on a lost database.
            async with task_during(deliveries.run()):
                yield deliveries
        finally:
            await deliveries.close()
