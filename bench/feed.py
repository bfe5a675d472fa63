"""Scenario 6: from a signed webhook into `serve` to the SSE event and a subscriber's receipt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from bench import db, procs, webhooks
from bench.load import percentile
from bench.payloads import signed_bodies
from bench.report import Figure, Results
from bench.runs import measured
from bench.world import SECRET, WEBHOOK_PATH, World

RATE = 200  # changes per second, as the issue asks
STEP = 90  # the payloads' step: its own summaries, never another scenario's
GIVE_UP = 10.0  # seconds after the last send for the last receipt
SEQUENCE = re.compile(r"delivery ([0-9]+)$")
TRIGGERS = ("issues_changed_insert", "issues_changed_update")  # migrations/008_changes.sql
ORDER = (True, False, False, True)  # change log on/off: ABBA, so that drift cancels out


class Clock:
    """When each change was due to be sent, and when the stream and the subscriber saw it."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.due: dict[int, float] = {}
        self.streamed: dict[int, float] = {}
        self.received: dict[int, float] = {}
        self.all_in = asyncio.Event()

    def saw(self, into: dict[int, float], entry: dict[str, Any]) -> None:
        match = SEQUENCE.search(entry["issue"]["summary"] or "")
        if match:
            into.setdefault(int(match.group(1)), time.perf_counter())
        if min(len(self.streamed), len(self.received)) >= self.expected:
            self.all_in.set()


@contextlib.asynccontextmanager
async def receiver(clock: Clock) -> AsyncIterator[str]:
    """A subscriber on loopback that notes when each entry arrives."""

    async def take(request: web.Request) -> web.Response:
        clock.saw(clock.received, json.loads(await request.read()))
        return web.Response(status=204)

    async with procs.receiving_at("/hook", take) as url:
        yield f"{url}/hook"


async def follow(
    session: aiohttp.ClientSession, url: str, clock: Clock, ready: asyncio.Event
) -> None:
    """Read the SSE stream, noting when each entry arrives."""
    async with session.get(f"{url}/api/v1/changes/stream", timeout=None) as stream:
        ready.set()
        async for line in stream.content:
            if line.startswith(b"data:"):
                clock.saw(clock.streamed, json.loads(line[5:]))


async def send(
    session: aiohttp.ClientSession, world: World, clock: Clock, count: int, base_ms: int
) -> None:
    """Open loop: each webhook at its due time, whatever the earlier ones are doing."""
    url = f"{world.serve.url}{WEBHOOK_PATH}"
    bodies = list(signed_bodies(SECRET, STEP, count, world.plan.issues, 0, base_ms))
    start = time.perf_counter() + 0.05
    sent = []
    for index, (delivery, body, signature) in enumerate(bodies):
        due = start + index / RATE
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        clock.due[index] = due
        headers = {
            "X-Hub-Signature": f"sha256={signature}",
            "X-Atlassian-Webhook-Identifier": delivery,
            "Content-Type": "application/json",
        }
        sent.append(asyncio.create_task(_post(session, url, body, headers)))
    await asyncio.gather(*sent)


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: Any) -> None:
    async with session.post(url, data=body, headers=headers) as reply:
        await reply.read()


async def measure(world: World, count: int) -> Clock:
    clock, ready = Clock(count), asyncio.Event()
    base_ms = int(time.time() * 1000) + 600_000  # newer than any earlier scenario wrote
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session, receiver(clock) as hook:
        created = await session.post(f"{world.serve.url}/api/v1/subscriptions", json={"url": hook})
        subscription = await created.json()
        if created.status != 201:
            raise RuntimeError(f"could not subscribe: {subscription}")
        stream = asyncio.create_task(follow(session, world.serve.url, clock, ready))
        await asyncio.wait_for(ready.wait(), 10)
        await send(session, world, clock, count, base_ms)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(clock.all_in.wait(), GIVE_UP)
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
        await session.delete(f"{world.serve.url}/api/v1/subscriptions/{subscription['id']}")
    return clock


def latencies(clock: Clock, seen: dict[int, float]) -> list[float]:
    return [(seen[n] - due) * 1000 for n, due in clock.due.items() if n in seen]


def add(results: Results, name: str, values: list[float], sent: int, target: float) -> None:
    lost = sent - len(values)
    p99 = percentile(values, 0.99) if values and not lost else float("inf")
    results.add(
        Figure(
            "6 feed",
            f"webhook to {name}, p99 of {sent} at {RATE}/s",
            p99,
            "ms",
            None,
            "",
            target=f"≤ {target:g} ms",
            met=p99 <= target,
            note=f"p50 {percentile(values, 0.5):.1f} ms, max {max(values, default=0):.1f} ms,"
            f" {lost} lost; counted from when each webhook was due",
        )
    )


async def change_log(dsn: str, on: bool) -> None:
    """Turn the change log's triggers on or off: the ingest run without it is the baseline."""
    verb = "ENABLE" if on else "DISABLE"
    connection = await db.connect(dsn)
    try:
        for trigger in TRIGGERS:
            await connection.execute(f"ALTER TABLE issues {verb} TRIGGER {trigger}")
    finally:
        await connection.close()


async def ingest(world: World) -> list[dict[str, Any]]:
    """Webhooks at saturation with the change log on and off, ABBA, in the same world."""
    base_ms = int(time.time() * 1000) + 1_200_000  # newer than the latency run's
    found, first = [], 0
    try:
        for on in ORDER:
            await change_log(world.dsn, on)
            orders = webhooks.spec(world, STEP + 1, None, first, base_ms)
            first += orders["webhooks"]["count"]
            result = await measured(world.serve.pid, orders | {"port": world.serve.port})
            found.append(result | {"change_log": on})
    finally:
        await change_log(world.dsn, True)
    return found


def add_ingest(results: Results, runs: list[dict[str, Any]]) -> None:
    on = [run["throughput"] for run in runs if run["change_log"]]
    off = [run["throughput"] for run in runs if not run["change_log"]]
    ours, without = sum(on) / len(on), sum(off) / len(off)
    shown = " / ".join(f"{run['throughput']:,.0f}" for run in runs)
    results.add(
        Figure(
            "6 feed",
            "webhook ingest at saturation, change log on",
            ours,
            "per s",
            without,
            "the same, change log off (its triggers disabled)",
            better="higher",
            target="≥ 0.95x",
            met=ours >= 0.95 * without,
            note=f"runs on / off / off / on: {shown} per s",
        )
    )


async def run(world: World, results: Results) -> None:
    count = int(RATE * world.plan.feed_seconds)
    clock = await measure(world, count)
    streamed, received = latencies(clock, clock.streamed), latencies(clock, clock.received)
    runs = await ingest(world)
    results.raw["feed"] = {
        "rate": RATE,
        "sent": count,
        "sse_ms": streamed,
        "subscriber_ms": received,
        "ingest": runs,
    }
    add(results, "SSE event", streamed, count, 50)
    add(results, "subscriber's receipt", received, count, 100)
    add_ingest(results, runs)
