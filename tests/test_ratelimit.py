"""The Retry-After gate, backoff and circuit breaker, on a fake clock."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from service.jira.pacing import CircuitBreaker, RateLimiter, ThrottledError, parse_retry_after


class FakeTime:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_retry_after_in_seconds():
    """Retry-After as a number of seconds is read as such."""
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5


def test_retry_after_as_http_date():
    """Retry-After as an HTTP date is the time left until that date."""
    wall = 1_800_000_000.0
    assert parse_retry_after(formatdate(wall + 30, usegmt=True), wall=lambda: wall) == 30.0


def test_retry_after_in_the_past_or_unreadable():
    """A past date means no pause; garbage or a missing header means no advice."""
    assert parse_retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_doubles_up_to_the_cap():
    """Without jitter the backoff doubles from the base and stops at the cap."""
    limiter = RateLimiter(base=2.0, cap=30.0, rand=lambda: 1.0)
    assert [limiter.backoff(attempt) for attempt in range(6)] == [2, 4, 8, 16, 30, 30]


def test_backoff_jitter_stays_below_the_ceiling():
    """Full jitter scales the ceiling by a random fraction."""
    assert RateLimiter(base=2.0, rand=lambda: 0.25).backoff(2) == 2.0


async def test_pause_holds_the_next_acquire():
    """After a pause, the next caller waits out the remainder."""
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    limiter.pause(5.0)
    fake.now += 2.0
    assert await limiter.acquire() == 3.0
    assert await limiter.acquire() == 0.0


async def test_shorter_pause_never_shortens_a_longer_one():
    """A later, shorter Retry-After does not open the gate early."""
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    limiter.pause(10.0)
    limiter.pause(1.0)
    assert limiter.remaining == 10.0


async def test_pause_longer_than_max_wait_is_refused():
    """A caller is told how long to come back later instead of waiting past max_wait."""
    fake = FakeTime()
    limiter = RateLimiter(max_wait=60.0, clock=fake.clock, sleep=fake.sleep)
    limiter.pause(600.0)
    with pytest.raises(ThrottledError) as caught:
        await limiter.acquire()
    assert caught.value.retry_after == 600.0
    assert fake.sleeps == []


async def test_steady_rate_spaces_concurrent_callers():
    """With max_rps, callers that arrive together go one interval apart."""
    fake = FakeTime()
    limiter = RateLimiter(max_rps=2.0, clock=fake.clock, sleep=fake.sleep)
    starts: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        starts.append(fake.now)

    await asyncio.gather(*(call() for _ in range(4)))
    assert sorted(starts) == [1000.0, 1000.5, 1001.0, 1001.5]


def test_breaker_opens_after_threshold_failures():
    """N consecutive failures open the breaker and it refuses with the time left."""
    fake = FakeTime()
    breaker = CircuitBreaker(threshold=3, cool_off=30.0, clock=fake.clock)
    for _ in range(2):
        breaker.record_failure()
    assert breaker.admit() is None
    breaker.record_failure()
    assert breaker.state == "open"
    fake.now += 10.0
    assert breaker.admit() == 20.0


def test_success_resets_the_failure_count():
    """Failures must be consecutive to open the breaker."""
    breaker = CircuitBreaker(threshold=2, clock=FakeTime().clock)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_half_open_lets_exactly_one_probe_through():
    """After the cool-off one call goes; others wait until it reports."""
    fake = FakeTime()
    breaker = CircuitBreaker(threshold=1, cool_off=30.0, clock=fake.clock)
    breaker.record_failure()
    fake.now += 30.0
    assert breaker.state == "half_open"
    assert breaker.admit() is None
    assert breaker.admit() == 30.0
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.admit() is None


def test_failed_probe_reopens_for_a_full_cool_off():
    """A probe that fails opens the breaker again from now."""
    fake = FakeTime()
    breaker = CircuitBreaker(threshold=5, cool_off=30.0, clock=fake.clock)
    for _ in range(5):
        breaker.record_failure()
    fake.now += 31.0
    assert breaker.admit() is None
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.admit() == 30.0


def test_lost_probe_does_not_wedge_the_breaker():
    """A probe that never reports (its task was cancelled) is replaced after a cool-off."""
    fake = FakeTime()
    breaker = CircuitBreaker(threshold=1, cool_off=30.0, clock=fake.clock)
    breaker.record_failure()
    fake.now += 30.0
    assert breaker.admit() is None
    fake.now += 30.0
    assert breaker.admit() is None
