"""Scenario 11: 300 subscriptions of 30 clients take 30 changes while webhooks keep arriving.

Webhooks go in open loop at RATE; every tenth changes one of the 30 issues the subscriptions
follow (`keys`), the rest change other issues, which every subscription's worker still reads
past. Three runs in one world: none, 300 subscriptions, none again (ABA, so that drift in the
database's size shows), each with its own deliveries. Figures: the webhook p99 with the
subscriptions against the mean of the two runs without; and whether each of the 300
receivers got each of the 30 changes once (retries aside), in log order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bench import db, procs
from bench.load import percentile
from bench.payloads import issue_key, signed_bodies
from bench.report import Figure, Results
from bench.world import SECRET, WEBHOOK_PATH, World
from service.storage import clients

RATE = 100  # webhooks per second
SENT = 300  # webhooks per run: 30 of them change a followed issue
EVERY = SENT // 30
CLIENTS, EACH = 30, 10  # 300 subscriptions
STEP = 95  # the payloads' step: its own summaries
GIVE_UP = 300.0  # seconds for the last delivery after the last webhook


@dataclass
class Inbox:
    """What each subscription's receiver took, in arrival order."""

    taken: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # id, cursor
    posts: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, receiver: int, delivery: str, cursor: str) -> None:
        self.posts += 1
        self.taken.setdefault(receiver, []).append((delivery, cursor))
        done = [len({d for d, _ in got}) for got in self.taken.values()]
        if len(done) == CLIENTS * EACH and min(done) >= SENT // EVERY:
            self.full.set()


@contextlib.asynccontextmanager
async def receiving(inbox: Inbox) -> AsyncIterator[str]:
    async def take(request: web.Request) -> web.Response:
        entry = json.loads(await request.read())
        receiver = int(request.match_info["n"])
        inbox.take(receiver, request.headers["webhook-id"], entry["cursor"])
        return web.Response(status=204)

    async with procs.receiving_at("/hook/{n}", take) as url:
        yield f"{url}/hook"


def tokens() -> dict[str, str]:
    return {
        f"bench-client-{n}": f"bench-client-token-{n:02d}-0123456789abcdef" for n in range(CLIENTS)
    }


async def add_clients(world: World) -> None:
    connection = await db.connect(world.dsn)
    try:
        for name, token in tokens().items():
            await clients.add(connection, name, {"subscribe"}, token)
    finally:
        await connection.close()


async def remove_clients(world: World) -> None:
    connection = await db.connect(world.dsn)
    try:
        await connection.execute("DELETE FROM subscriptions")
        await connection.execute("DELETE FROM clients")
    finally:
        await connection.close()


async def until(check: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not load the clients in time")
        await asyncio.sleep(0.1)


async def subscribe_all(
    session: aiohttp.ClientSession, world: World, hook: str, first: int
) -> None:
    """Ten subscriptions a client, each to its own receiver, following the 30 changed keys."""
    keys = [issue_key(s % world.plan.issues + 1) for s in range(first, first + SENT, EVERY)]
    url = f"{world.serve.url}/api/v1/subscriptions"

    async def loaded() -> bool:
        token = next(iter(tokens().values()))
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as answer:
            return answer.status == 200

    await until(loaded)
    for n, token in enumerate(tokens().values()):
        for k in range(EACH):
            asked = {"url": f"{hook}/{n * EACH + k}", "keys": keys}
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(url, json=asked, headers=headers) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"could not subscribe: {await answer.text()}")


async def send(
    session: aiohttp.ClientSession, world: World, first: int, base_ms: int
) -> list[float]:
    """Open loop at RATE; each webhook's latency from when it was due to its answer, in ms."""
    url = f"{world.serve.url}{WEBHOOK_PATH}"
    bodies = list(signed_bodies(SECRET, STEP, SENT, world.plan.issues, first, base_ms))
    start, timed = time.perf_counter() + 0.05, []
    for index, (delivery, body, signature) in enumerate(bodies):
        due = start + index / RATE
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        headers = {
            "X-Hub-Signature": f"sha256={signature}",
            "X-Atlassian-Webhook-Identifier": delivery,
            "Content-Type": "application/json",
        }
        timed.append(asyncio.create_task(_post(session, url, body, headers, due)))
    return list(await asyncio.gather(*timed))


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Any, due: float
) -> float:
    async with session.post(url, data=body, headers=headers) as reply:
        await reply.read()
        if reply.status != 200:
            raise RuntimeError(f"webhook answered {reply.status}")
    return (time.perf_counter() - due) * 1000


async def one_run(world: World, first: int, base_ms: int, subscribed: bool) -> dict[str, Any]:
    inbox = Inbox()
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session, receiving(inbox) as hook:
        if subscribed:
            await subscribe_all(session, world, hook, first)
        started = time.perf_counter()
        latencies = await send(session, world, first, base_ms)
        if subscribed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inbox.full.wait(), GIVE_UP)
        drained = time.perf_counter() - started
    found = {"subscribed": subscribed, "webhook_ms": latencies, "drained_s": drained}
    return found | judge(inbox, subscribed)


def judge(inbox: Inbox, subscribed: bool) -> dict[str, Any]:
    """Receivers that got each change once (first arrivals in log order), and the repeats."""
    complete = in_order = repeats = 0
    for got in inbox.taken.values():
        firsts: dict[str, str] = {}
        for delivery, cursor in got:
            firsts.setdefault(delivery, cursor)
        repeats += len(got) - len(firsts)
        complete += len(firsts) == SENT // EVERY
        in_order += list(firsts.values()) == sorted(firsts.values())
    return {
        "receivers": CLIENTS * EACH if subscribed else 0,
        "complete": complete,
        "in_order": in_order,
        "repeats": repeats,
        "posts": inbox.posts,
    }


async def run(world: World, results: Results) -> None:
    base_ms = int(time.time() * 1000) + 1_800_000  # newer than the feed scenario's
    await add_clients(world)
    runs = []
    try:
        for n, subscribed in enumerate((False, True, False)):
            runs.append(await one_run(world, 50_000 + n * SENT, base_ms, subscribed))
            if subscribed:
                connection = await db.connect(world.dsn)
                await connection.execute("DELETE FROM subscriptions")
                await connection.close()
    finally:
        await remove_clients(world)
    results.raw["fanout"] = runs
    add(results, runs)


def add(results: Results, runs: list[dict[str, Any]]) -> None:
    ours = percentile(runs[1]["webhook_ms"], 0.99)
    without = [percentile(run["webhook_ms"], 0.99) for run in (runs[0], runs[2])]
    baseline = sum(without) / 2
    results.add(
        Figure(
            "7 fan-out",
            f"webhook p99 at {RATE}/s, 300 subscriptions of 30 clients taking 30 changes",
            ours,
            "ms",
            baseline,
            "the same, no subscriptions (mean of the runs before and after)",
            target="≤ 2x",
            met=ours <= 2 * baseline,
            note=f"without: {without[0]:.1f} / {without[1]:.1f} ms; p50 with"
            f" {percentile(runs[1]['webhook_ms'], 0.5):.1f} ms",
        )
    )
    got = runs[1]
    results.add(
        Figure(
            "7 fan-out",
            "receivers that got each of the 30 changes once, in log order",
            min(got["complete"], got["in_order"]),
            f"of {got['receivers']}",
            None,
            "",
            better="higher",
            target="all",
            met=got["complete"] == got["in_order"] == got["receivers"],
            note=f"complete {got['complete']}, in order {got['in_order']}; {got['posts']} POSTs"
            f" ({got['repeats']} repeats) in {got['drained_s']:.1f} s from the first webhook",
        )
    )
