"""Who is calling: the clients (stored, and those of API_TOKENS/ADMIN_TOKENS), and their limits.

Each process keeps the live clients in memory, reloaded every CLIENTS_RELOAD seconds, so that
a request never waits on the database to be identified, and a revoked token stops working
within that on every replica. Rates and open streams are counted per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import asyncpg

from service.config import Settings
from service.storage import clients as stored
from service.storage.clients import SCOPES, Client, token_hash
from service.storage.pool import UNREACHABLE, DatabaseUnavailableError
from service.sync.background import task_during

log = logging.getLogger(__name__)
# With no token configured and no client made, the API is open: the caller is this one.
ANONYMOUS = Client("anonymous", frozenset(SCOPES))
API_SCOPES = frozenset({"read", "subscribe", "refresh"})  # what an API token opened before
Clock = Callable[[], float]
RELOAD_FAILED: tuple[type[BaseException], ...] = (
    DatabaseUnavailableError,
    asyncpg.PostgresError,
    *UNREACHABLE,
)
__all__ = ["ANONYMOUS", "Client", "Clients", "TooManyStreamsError"]


class TooManyStreamsError(Exception):
    def __init__(self, client: str, limit: int) -> None:
        super().__init__(
            f"client {client!r} has {limit} change streams open, its limit; close one first"
        )
        self.limit = limit


class Bucket:
    """A token bucket: `rate` a second, up to `burst` at once."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = burst, clock()

    def take(self) -> float:
        """0 when admitted; else the seconds until a token is there."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def configured(settings: Settings) -> dict[bytes, Client]:
    """The clients of API_TOKENS and ADMIN_TOKENS, each named by its hash's first digits."""
    found: dict[bytes, Client] = {}
    for tokens, prefix, scopes in (
        (settings.api_tokens, "api-token-", API_SCOPES),
        (settings.admin_tokens, "admin-token-", frozenset({"admin"})),
    ):
        for token in tokens:
            digest = token_hash(token)
            found[digest] = Client(prefix + digest.hex()[:8], scopes, legacy=prefix == "api-token-")
    return found


class Clients:
    """The live clients of this process, by token, with their request rates and streams."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, clock: Clock = time.monotonic
    ) -> None:
        self.settings, self.pool, self.clock = settings, pool, clock
        self.configured = configured(settings)
        self.stored: dict[bytes, Client] = {}
        self.requests: dict[str, Bucket] = {}
        self.subscribing: dict[str, Bucket] = {}
        self.streams: Counter[str] = Counter()

    @property
    def open(self) -> bool:
        """No token configured and no client made: a loopback service, open to all."""
        return not self.configured and not self.stored

    def identify(self, token: str | None) -> Client | None:
        if self.open:
            return ANONYMOUS
        if token is None:
            return None
        digest = token_hash(token)
        return self.configured.get(digest) or self.stored.get(digest)

    def admit(self, client: Client) -> float:
        """0 when the client may make one more request now; else seconds to wait."""
        if client is ANONYMOUS:
            return 0.0
        rate = client.limits.rate or self.settings.client_rate
        return self._bucket(self.requests, client.name, rate, 2 * rate).take()

    def admit_subscribing(self, client: Client) -> float:
        """Like `admit`, for making a subscription (CLIENT_SUBSCRIBE_RATE a minute)."""
        if client is ANONYMOUS:
            return 0.0
        per_minute = self.settings.client_subscribe_rate
        return self._bucket(self.subscribing, client.name, per_minute / 60, per_minute).take()

    def subscription_limit(self, client: Client) -> int | None:
        if client is ANONYMOUS:
            return None
        return _or(client.limits.subscriptions, self.settings.client_max_subscriptions)

    def open_stream(self, client: Client | None) -> Callable[[], None]:
        """Count one more open stream of the client, and answer how to count it closed;
        TooManyStreamsError when it already holds its limit (CLIENT_MAX_STREAMS)."""
        if client is None or client is ANONYMOUS:
            return lambda: None
        limit = _or(client.limits.streams, self.settings.client_max_streams)
        if self.streams[client.name] >= limit:
            raise TooManyStreamsError(client.name, limit)
        self.streams[client.name] += 1
        closed = False

        def close() -> None:
            nonlocal closed
            if not closed:
                closed = True
                self.streams[client.name] -= 1

        return close

    def _bucket(self, buckets: dict[str, Bucket], name: str, rate: float, burst: float) -> Bucket:
        if name not in buckets or buckets[name].rate != rate:
            buckets[name] = Bucket(rate, max(1.0, burst), self.clock)
        return buckets[name]

    async def reload(self) -> None:
        self.stored = await stored.live(self.pool)

    async def run(self) -> None:
        """Reload every CLIENTS_RELOAD; a database that is down keeps the last known clients."""
        while True:
            await asyncio.sleep(self.settings.clients_reload)
            try:
                await self.reload()
            except RELOAD_FAILED as exc:
                log.warning("clients not reloaded", extra={"error": type(exc).__name__})


def _or(own: int | None, default: int) -> int:
    return default if own is None else own


@contextlib.asynccontextmanager
async def loaded(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Clients]:
    """The process's clients for the lifespan, loaded before it serves, then kept current."""
    clients = Clients(settings, pool)
    await clients.reload()
    async with task_during(clients.run()):
        yield clients
