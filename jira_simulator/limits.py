"""Jira Cloud's burst limit as a token bucket, plus the 429 storm switch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refusal:
    """A 429: how long the caller must wait, and what the bucket had left."""

    retry_after: float
    limit: int
    remaining: int


class RateLimiter:
    """Tokens refill at `rate` per second up to `burst`; an early retry is refused again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens = 0.0
        self._stamp = clock()
        self._blocked_until = 0.0
        self._storm_until = 0.0
        self._fresh = True

    def storm(self, seconds: float) -> None:
        """Refuse every request for `seconds`."""
        self._storm_until = self._clock() + seconds

    def calm(self) -> None:
        self._storm_until = 0.0
        self._blocked_until = 0.0

    def check(self, rate: float, burst: int, fixed_wait: float | None) -> Refusal | None:
        """None to let a request through, else the refusal; waits are whole seconds unless fixed."""
        now = self._clock()
        if now < self._storm_until:
            return self._refuse(now, fixed_wait or math.ceil(self._storm_until - now), burst)
        if rate <= 0:
            return None
        self._refill(now, rate, burst)
        if now < self._blocked_until:
            # Jira: reissuing before Retry-After expires fails with the same or a longer wait.
            return self._refuse(now, fixed_wait or math.ceil(self._blocked_until - now), burst)
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return self._refuse(now, fixed_wait or math.ceil((1 - self._tokens) / rate), burst)

    def remaining(self) -> int:
        return int(self._tokens)

    def _refill(self, now: float, rate: float, burst: int) -> None:
        if self._fresh:
            self._tokens, self._fresh = float(burst), False
        self._tokens = min(float(burst), self._tokens + (now - self._stamp) * rate)
        self._stamp = now

    def _refuse(self, now: float, wait: float, burst: int) -> Refusal:
        self._blocked_until = max(self._blocked_until, now + wait)
        return Refusal(retry_after=wait, limit=burst, remaining=0)
