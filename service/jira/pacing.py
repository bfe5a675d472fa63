"""The process-wide pacing of requests to Jira: a Retry-After gate, backoff, and a breaker."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Literal

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
BreakerState = Literal["closed", "open", "half_open"]


class ThrottledError(Exception):
    """The gate is shut for longer than a caller is willing to wait."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Jira asked us to pause; {retry_after:.1f}s remain")
        self.retry_after = retry_after


def parse_retry_after(value: str | None, wall: Clock = time.time) -> float | None:
    """Read Retry-After as seconds, or as an HTTP date relative to the wall clock."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - wall())


def backoff(
    base: float, cap: float, attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)], so
    that the retries of many callers spread out rather than arrive together."""
    return rand() * min(cap, base * 2.0**attempt)


class RateLimiter:
    """One gate that every request awaits: Jira's pauses, backoff and an optional steady rate."""

    def __init__(
        self,
        max_rps: float | None = None,
        base: float = 2.0,
        cap: float = 30.0,
        max_wait: float = 60.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.max_wait = base, cap, max_wait
        self._interval = 1.0 / max_rps if max_rps else 0.0
        self._clock, self._sleep, self._rand = clock, sleep, rand
        self._not_before = 0.0
        self._next_slot = 0.0

    @property
    def remaining(self) -> float:
        """Seconds until the gate opens, 0 when it is open."""
        return max(0.0, self._not_before - self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every next request for at least `seconds`; a shorter pause never shortens one."""
        self._not_before = max(self._not_before, self._clock() + seconds)

    def backoff(self, attempt: int) -> float:
        return backoff(self.base, self.cap, attempt, self._rand)

    async def wait(self, seconds: float) -> None:
        """Pause one caller only, through the same injectable sleep."""
        await self._sleep(seconds)

    async def acquire(self) -> float:
        """Wait for the gate and a rate slot; return the seconds waited."""
        start = self._clock()
        while (delay := max(self._not_before, self._next_slot) - self._clock()) > 0:
            if delay > self.max_wait:
                raise ThrottledError(delay)
            await self._sleep(delay)
        # No await between the check above and this reservation, so waiters woken together
        # take consecutive slots instead of all going at once.
        self._next_slot = self._clock() + self._interval
        return self._clock() - start


class CircuitBreaker:
    """Refuse calls for a cool-off after `threshold` consecutive failures, then probe once."""

    def __init__(
        self, threshold: int = 5, cool_off: float = 30.0, clock: Clock = time.monotonic
    ) -> None:
        self.threshold, self.cool_off = threshold, cool_off
        self.failures = 0
        self._clock = clock
        self._opened_at: float | None = None
        self._probe_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "open" if self._clock() - self._opened_at < self.cool_off else "half_open"

    def admit(self) -> float | None:
        """Return None when a call may go, else the seconds until one might."""
        if self._opened_at is None:
            return None
        now = self._clock()
        if (wait := self._opened_at + self.cool_off - now) > 0:
            return wait
        # A probe that never reported (its task was cancelled) must not wedge the breaker,
        # so a new probe is allowed once per cool-off.
        if self._probe_at is not None and (wait := self._probe_at + self.cool_off - now) > 0:
            return wait
        self._probe_at = now
        return None

    def record_success(self) -> None:
        self.failures = 0
        self._opened_at = self._probe_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self._probe_at is not None or self.failures >= self.threshold:
            self._opened_at, self._probe_at = self._clock(), None
