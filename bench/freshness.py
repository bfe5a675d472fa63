"""Scenario 4: from a change in the simulator to a GET that shows it, through the webhook."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp

from bench import refresh
from bench.load import percentile
from bench.payloads import issue_key
from bench.report import Figure, Results
from bench.world import World

GIVE_UP = 5.0  # seconds one change may take to show before it counts as lost
POLL = 0.001  # seconds between the reader's GETs


async def until_shown(session: aiohttp.ClientSession, url: str, status: str) -> float:
    """Read until the issue shows `status`; answer when (perf_counter), or nan."""
    deadline = time.perf_counter() + GIVE_UP
    while time.perf_counter() < deadline:
        async with session.get(url) as reply:
            body = await reply.json()
        if reply.status == 200 and body["status"]["name"] == status:
            return time.perf_counter()
        await asyncio.sleep(POLL)
    return float("nan")


async def one_change(session: aiohttp.ClientSession, world: World, key: str) -> tuple[float, float]:
    """Transition the issue in the simulator; answer (ms to shown, ms the admin call took)."""
    start = time.perf_counter()
    async with session.post(f"{world.simulator.url}/_sim/issues/{key}/transition") as reply:
        status = (await reply.json())["status"]
    asked = time.perf_counter()
    shown = await until_shown(session, f"{world.serve.url}/api/v1/issues/{key}", status)
    return (shown - start) * 1000, (asked - start) * 1000


async def origin_sweep(world: World, results: Results) -> float:
    """Seconds the origin design needs to revisit every link: a change waits up to that."""
    if "refresh" not in results.raw:
        results.raw["refresh"] = {"origin": await refresh.origin(world, 20)}
    base = results.raw["refresh"]["origin"]
    return float(base["seconds"] / base["issues"] * world.plan.issues)


async def run(world: World, results: Results) -> None:
    keys = [
        issue_key(n)
        for n in random.Random(4).sample(  # noqa: S311 -- a fixed sample, no secret
            range(1, world.plan.issues + 1), k=world.plan.freshness_changes
        )
    ]
    shown, admin = [], []
    async with aiohttp.ClientSession() as session:
        for key in keys:
            total, call = await one_change(session, world, key)
            shown.append(total)
            admin.append(call)
    lost = sum(1 for value in shown if value != value)
    seen = [value for value in shown if value == value]
    sweep = await origin_sweep(world, results)
    p99 = percentile(seen, 0.99) if not lost else float("inf")
    results.raw["freshness"] = {"shown_ms": shown, "admin_call_ms": admin, "lost": lost}
    results.add(
        Figure(
            "4 freshness",
            f"change in Jira to GET showing it, p99 of {len(keys)}",
            p99,
            "ms",
            sweep * 1000,
            "origin: one sequential sweep over every link (extrapolated)",
            target="≤ 100 ms",
            met=p99 <= 100.0,
            note=(
                f"p50 {percentile(seen, 0.5):.1f} ms, max {max(seen, default=0):.1f} ms, "
                f"{lost} lost; includes the simulator's admin call, p50 "
                f"{percentile(admin, 0.5):.1f} ms, and reads every {POLL * 1000:.0f} ms"
            ),
        )
    )
