"""The polling fallback: claim due tracked keys under a lease, read them in bulk, release."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from service.config import Settings
from service.jira.errors import JiraAuthError, JiraRateLimitedError, JiraUnavailableError
from service.storage import issues as store
from service.storage import tracking
from service.sync.leases import lease_for, log_takeover, owner_id, renewing
from service.sync.refresh import Refresher, Report

log = logging.getLogger(__name__)
# Within the time a container runtime allows for stopping (often 30 s), with room to spare.
STOP_GRACE_SECONDS = 10.0


class Poller:
    """Runs poll cycles, one at a time per process; a second caller joins the running one."""

    def __init__(self, pool: asyncpg.Pool, refresher: Refresher, settings: Settings) -> None:
        self.pool = pool
        self.refresher = refresher
        self.settings = settings
        self.owner = owner_id()
        self.lease = lease_for(settings.poll_interval, settings.lease_seconds)
        self.stopping = False
        self._running: asyncio.Task[Report] | None = None
        self.report = Report()  # the current or last cycle's, filled in batch by batch
        self._settings_followed = False
        self.clock: Callable[[], float] = time.monotonic  # the budget's clock; tests set it

    async def poll(self) -> Report:
        """Run a cycle now, or join the one already running."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._cycle())
        return await asyncio.shield(self._running)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Finish the current batch, leave no lease behind, and run no more.

        A batch stuck on a hanging Jira is cancelled after `grace`: its keys are handed
        back at once rather than held until their lease expires.
        """
        self.stopping = True
        if self._running is None or self._running.done():
            return
        done, _ = await asyncio.wait([self._running], timeout=grace)
        if not done:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)

    async def _cycle(self) -> Report:
        metrics = self.refresher.metrics
        try:
            report = await self._claim_and_read()
        except Exception:
            if metrics is not None:
                metrics.poll_runs.labels("error").inc()
            raise
        if metrics is not None:
            metrics.poll_runs.labels("ok").inc()
            metrics.poll_seconds.observe((report.finished or report.started) - report.started)
        return report

    async def _prepare(self) -> None:
        """Record reads served from the cache; on the first cycle, adopt changed settings."""
        settings = self.settings
        if not self._settings_followed:
            await tracking.follow_settings(self.pool, settings.cache_ttl, settings.poll_interval)
            self._settings_followed = True
        await self.refresher.reads.flush(self.pool)

    async def _claim_and_read(self) -> Report:
        total = self.report = Report()
        settings = self.settings
        deadline = self.clock() + settings.poll_budget
        await self._prepare()
        while not self.stopping and self.clock() < deadline:
            taken: dict[str, int] = {}
            keys, handled = await tracking.claim_due(
                self.pool,
                self.owner,
                settings.poll_batch_size,
                self.lease,
                settings.cache_ttl,
                taken,
            )
            log_takeover("poll keys", [(f"{n} keys", owner) for owner, n in taken.items()])
            if not handled:
                break
            keys = await self._skip_verified(keys)
            if keys and not await self._poll_batch(keys, total):
                break
        total.finished = time.monotonic()
        return total

    async def _skip_verified(self, keys: list[str]) -> list[str]:
        """Hand back, unread, the keys a sync round has shown current within the TTL."""
        settings = self.settings
        verified = await tracking.release_verified(
            self.pool, self.owner, keys, settings.cache_ttl, settings.sync_recheck
        )
        return [key for key in keys if key not in verified]

    async def _poll_batch(self, keys: list[str], total: Report) -> bool:
        """Read one claimed batch; answer whether the cycle should go on."""
        try:
            async with renewing(self._renewer(keys), self.lease):
                report = await self.refresher.refresh(keys, "poll")
        except asyncio.CancelledError:
            await asyncio.shield(tracking.give_back(self.pool, self.owner, keys))
            raise
        except (JiraUnavailableError, JiraRateLimitedError) as exc:
            # Nothing read: the keys are due again at once, for this or another replica.
            await tracking.give_back(self.pool, self.owner, keys)
            log.warning("poll stopped: Jira unavailable", extra={"error": str(exc)})
            return False
        except JiraAuthError as exc:
            await self._fail_batch(keys, str(exc))
            log.error("poll stopped: Jira refused our credentials", extra={"error": str(exc)})
            return False
        await self._release(report)
        total.merge(report)
        return True

    def _renewer(self, keys: list[str]) -> Callable[[], Awaitable[None]]:
        async def renew() -> None:
            await tracking.renew(self.pool, self.owner, keys, self.lease)

        return renew

    async def _release(self, report: Report) -> None:
        settings = self.settings
        found = report.keys("refreshed", "unchanged", "failed")
        missing = report.keys("not_found")
        await tracking.release(self.pool, self.owner, found, settings.cache_ttl)
        # Keys Jira does not know are checked rarely: they cost a request each.
        await tracking.release(self.pool, self.owner, missing, settings.not_found_recheck)

    async def _fail_batch(self, keys: list[str], error: str) -> None:
        await store.mark_failed(self.pool, keys, error)
        await tracking.release(self.pool, self.owner, keys, self.settings.cache_ttl)
