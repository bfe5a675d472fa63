"""A failover under load: a primary and a streaming standby, the primary SIGKILLed mid-traffic,
the standby promoted; two replicas reconnect by themselves and lose nothing they acknowledged
(with a synchronous standby). `make test-failover` runs only these; they are in `make test`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.storage import changes
from service.storage import issues as store
from service.storage.changes import Filter
from service.sync import feed
from tests.cluster import Cluster, available
from tests.conftest import app_client
from tests.factory import make_issue
from tests.payloads import SECRET, encode, event, headers

pytestmark = [
    pytest.mark.failover,
    pytest.mark.skipif(not available(), reason="the embedded PostgreSQL lacks pg_basebackup"),
]
ISSUES = 10
BOUND = 120.0  # seconds any phase may take on a loaded machine before the test gives up


@dataclass
class Traffic:
    """Webhooks and reads sent continuously to two replicas, and what each answered."""

    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # delivery: (issue, n)
    statuses: dict[str, list[int]] = field(default_factory=lambda: {"write": [], "read": []})
    memo_reads_in_outage: list[int] = field(default_factory=list)
    last_ack: float = 0.0
    outage: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self) -> None:
        for n in itertools.count(1):
            if self.stop.is_set():
                return
            issue = n % ISSUES
            body = encode(event(id=issue + 1, key=f"PRJ-{issue + 1}", summary=f"v{n}",
                                updated=_updated(n)))  # fmt: skip
            delivery = f"d-{n}"
            answer = await self._send(self.replicas[n % 2], body, delivery)
            self.statuses["write"].append(answer)
            if answer == 200:
                self.acked[delivery] = (issue + 1, n)
                self.last_ack = time.monotonic()
            else:
                await asyncio.sleep(0.05)

    async def read(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            answer = await self.replicas[n % 2].get(f"/api/v1/issues/PRJ-{n % ISSUES + 1}")
            self.statuses["read"].append(answer.status_code)
            if self.outage:
                self.memo_reads_in_outage.append(answer.status_code)
            if answer.status_code != 200:
                await asyncio.sleep(0.05)

    async def _send(self, http: httpx.AsyncClient, body: bytes, delivery: str) -> int:
        answer = await http.post(
            "/api/v1/webhooks/jira", content=body, headers=headers(body, delivery)
        )
        if answer.status_code == 503:
            assert answer.headers.get("retry-after"), "a 503 without Retry-After"
        return answer.status_code


def _updated(n: int) -> str:
    """Jira's `updated`, a second later for each event: every write goes forward."""
    minutes, seconds = divmod(n, 60)
    hours, minutes = divmod(minutes, 60)
    return f"2026-11-27T{hours:02d}:{minutes:02d}:{seconds:02d}.000+0000"


@contextlib.asynccontextmanager
async def cluster_of(synchronous: bool) -> AsyncIterator[Cluster]:
    cluster = await asyncio.to_thread(Cluster(synchronous).start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


async def until(condition: object, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {BOUND:g} s: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("synchronous", [True, False], ids=["synchronous", "asynchronous"])
async def test_a_failover_under_load(synchronous: bool) -> None:
    """Primary killed, standby promoted: replicas recover alone, never 500, memo and feed right."""
    async with cluster_of(synchronous) as cluster:
        settings = Settings(database_url=cluster.dsn, webhook_secret=SECRET, memo_ttl=3600.0)
        seed = await asyncpg.connect(cluster.dsn)
        issues = [make_issue(id=n, key=f"PRJ-{n}", summary="v0") for n in range(1, ISSUES + 1)]
        async with app_client(settings) as one, app_client(settings) as two:
            await store.upsert_issues(seed, issues, "poll")
            await seed.close()
            start = await _cursor(cluster.dsn)
            traffic = Traffic((one, two))
            async with _tail(cluster.dsn, start) as heard:
                tasks = [asyncio.create_task(traffic.write()), asyncio.create_task(traffic.read())]
                await until(lambda: len(traffic.acked) >= 40, "40 deliveries acknowledged")
                held = set(traffic.acked)
                if not synchronous:  # replication lags: what is committed now stays on the primary
                    await asyncio.to_thread(cluster.hold_back_wal)
                    await until(lambda: len(traffic.acked) >= 60, "20 more deliveries acknowledged")
                traffic.outage = True
                await asyncio.to_thread(cluster.kill_primary)
                acked_before = len(traffic.acked)
                await asyncio.to_thread(cluster.promote)
                promoted = time.monotonic()
                await until(lambda: traffic.last_ack > promoted, "a write accepted after promotion")
                recovery = traffic.last_ack - promoted
                traffic.outage = False
                await until(lambda: len(traffic.acked) >= acked_before + 40, "40 more acks")
                traffic.stop.set()
                await asyncio.gather(*tasks)
                final = await _stored(cluster.node_dsn(1))
                await until(lambda: _fed(heard, final), "the feed delivering every final value")
            for replica in (one, two):
                shown = {key: await _summary(replica, key) for key in final}
                assert shown == final, "a replica serves an old value after the failover"
        lost = await _lost(cluster.node_dsn(1), traffic.acked)
    writes, reads = traffic.statuses["write"], traffic.statuses["read"]
    print(
        f"\nfailover ({'synchronous' if synchronous else 'asynchronous'} standby):"
        f" {len(traffic.acked)} deliveries acknowledged, {len(lost)} lost;"
        f" writes accepted {recovery:.2f} s after promotion;"
        f" answers: writes {sorted(set(writes))}, reads {sorted(set(reads))};"
        f" reads during the outage {traffic.memo_reads_in_outage.count(200)} of"
        f" {len(traffic.memo_reads_in_outage)} served"
    )
    assert 500 not in writes and 500 not in reads
    assert set(writes) <= {200, 503} and set(reads) <= {200, 503}
    if synchronous:
        assert lost == [], "an acknowledged delivery was lost with a synchronous standby"
    else:  # exactly those acknowledged while the standby lagged behind, no others
        assert lost and not set(lost) & held


async def _cursor(dsn: str) -> changes.Cursor:
    connection = await asyncpg.connect(dsn)
    try:
        return await changes.current_cursor(connection)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def _tail(dsn: str, start: changes.Cursor) -> AsyncIterator[dict[str, str]]:
    """The change feed followed across the failover: each issue's last summary it delivered."""
    from service.storage.pool import open_pool

    pool = await open_pool(dsn, acquire_timeout=5)
    heard: dict[str, str] = {}
    stop = asyncio.Event()

    async def follow(follower: feed.Feed) -> None:
        after = start
        while not stop.is_set():
            try:
                async for change in feed.follow(follower, after, Filter(), stop):
                    heard[change.cached.issue.key] = change.cached.issue.summary
                    after = change.cursor
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(0.1)  # PostgreSQL is away: look again
            except changes.InvalidCursorError:
                # The entries up to our cursor were lost with the old primary (asynchronous
                # standby): start again from the log's beginning, as a stream's client would.
                after = await changes.first_cursor(pool)

    try:
        async with feed.following(pool, dsn) as follower:
            task = asyncio.create_task(follow(follower))
            yield heard
            stop.set()
            await task
    finally:
        await pool.close()


def _fed(heard: dict[str, str], final: dict[str, str]) -> bool:
    return all(heard.get(key) == summary for key, summary in final.items())


async def _stored(dsn: str) -> dict[str, str]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT key, summary FROM issues")
    finally:
        await connection.close()
    return {row["key"]: row["summary"] for row in rows}


async def _summary(http: httpx.AsyncClient, key: str) -> str:
    answer = await http.get(f"/api/v1/issues/{key}")
    assert answer.status_code == 200, answer.text
    summary: str = answer.json()["summary"]
    return summary


async def _lost(dsn: str, acked: dict[str, tuple[int, int]]) -> list[str]:
    """Acknowledged deliveries the new primary has no record of."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT id FROM webhook_deliveries WHERE id = ANY($1::text[])", list(acked)
        )
    finally:
        await connection.close()
    return sorted(set(acked) - {row["id"] for row in rows})
