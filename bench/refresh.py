"""Scenario 1: refreshing 10,000 stale issues, ours (cron, bulk) against the origin's loop."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any, Protocol

import aiohttp

from bench import db
from bench.procs import ROOT, Proc, ProcessFailedError
from bench.profile import profiled
from bench.report import Figure, Results
from bench.world import EMAIL, TOKEN, World

CRON = "/api/v1/cron/jira-refresh"


class Simulated(Protocol):
    """A world with a simulator: the shared one, or one side of the sync scenario."""

    simulator: Proc


async def simulator_traffic(session: aiohttp.ClientSession, world: Simulated) -> dict[str, Any]:
    async with session.get(world.simulator.url + "/_sim/stats") as reply:
        stats = await reply.json()
    statuses = Counter(str(entry["status"]) for entry in stats["requests"])
    return {"by_endpoint": stats["counters"], "by_status": dict(statuses)}


async def reset_simulator(session: aiohttp.ClientSession, world: Simulated) -> None:
    async with session.post(world.simulator.url + "/_sim/reset") as reply:
        reply.raise_for_status()


async def ours(world: World) -> dict[str, Any]:
    """One cron call over everything due, timed from the caller's side."""
    connection = await db.connect(world.dsn)
    try:
        # A call with nothing due first, so that pool and plans are warm as in production.
        await connection.execute("UPDATE tracked SET next_due_at = now() + interval '1 day'")
        async with aiohttp.ClientSession() as session:
            await (await session.get(world.serve.url + CRON)).read()
            due = await db.make_all_due(connection)
            await reset_simulator(session, world)
            with profiled(world.serve.pid, "refresh"):
                start = time.perf_counter()
                async with session.get(world.serve.url + CRON) as reply:
                    report = await reply.json()
                seconds = time.perf_counter() - start
            traffic = await simulator_traffic(session, world)
        fresh = await connection.fetchval(
            "SELECT count(*) FROM issues WHERE fetched_at > now() - interval '1 minute'"
        )
    finally:
        await connection.close()
    return {"due": due, "seconds": seconds, "report": report, "traffic": traffic, "fresh": fresh}


async def origin(world: World, sample: int) -> dict[str, Any]:
    """The origin strategy over the first `sample` links, in its own process."""
    connection = await db.connect(world.dsn)
    try:
        await db.make_all_due(connection)
    finally:
        await connection.close()
    async with aiohttp.ClientSession() as session:
        await reset_simulator(session, world)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.origin", world.dsn, world.simulator.url,
            EMAIL, TOKEN, str(sample), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(child.communicate(), timeout=sample * 2 + 60)
        if child.returncode != 0:
            raise ProcessFailedError("origin", f"exited with {child.returncode}")
        result: dict[str, Any] = json.loads(out)
        result["traffic"] = await simulator_traffic(session, world)
    return result


async def run(world: World, results: Results) -> None:
    plan = world.plan
    mine = await ours(world)
    base = await origin(world, plan.origin_sample)
    results.raw["refresh"] = {"ours": mine, "origin": base}
    scale = plan.issues / base["issues"]
    extrapolated = base["seconds"] * scale
    requests = sum(mine["traffic"]["by_endpoint"].values())
    note = f"origin timed over {base['issues']} issues, x{scale:.1f} to {plan.issues:,}"
    results.add(
        Figure(
            "1 refresh",
            f"Jira requests to refresh {mine['due']:,} due issues",
            requests,
            "requests",
            base["requests"] * scale,
            "origin, 1 GET per link",
            target="≤ 101",
            met=requests <= 101 and mine["report"]["refreshed"] == plan.issues,
            note=f"{mine['traffic']['by_status']} by status",
        )
    )
    wall = results.add(
        Figure(
            "1 refresh",
            f"wall time to refresh {mine['due']:,} due issues",
            mine["seconds"],
            "s",
            extrapolated,
            "origin, sequential GET + UPDATE per issue (extrapolated)",
            target="≤ 3 s, ≥ 300x faster",
            note=note,
        )
    )
    wall.met = mine["seconds"] <= 3.0 and (wall.gain or 0) >= 300
