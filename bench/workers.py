"""Scenario 7: WEB_CONCURRENCY=2 against one worker, both paths, in the same world and run.

A second `serve` with two workers runs beside the world's one-worker `serve`, on the same
database. Each path is saturated on one, then two, two, one (ABBA): the scaling is the mean
of the two-worker runs over the mean of the one-worker runs.
"""

from __future__ import annotations

import time
from typing import Any

from bench import procs, reads, webhooks
from bench.procs import Proc
from bench.report import Figure, Results
from bench.runs import measured
from bench.webhooks import Sequences
from bench.world import World

ORDER = (1, 2, 2, 1)
# Later than the webhook and feed scenarios' `updated` times: every delivery goes forward.
BASE_OFFSET_MS = 2_400_000
STEP = 70
WARM = 4  # passes over the keys before each GET run, on new connections each


async def start_two(world: World) -> Proc:
    port = procs.free_port()
    settings = world.settings | {"PORT": str(port), "WEB_CONCURRENCY": "2"}
    return await procs.start_serve("serve-2-workers", settings)


async def gets(world: World, server: dict[int, Proc]) -> list[dict[str, Any]]:
    paths = reads.one_key_paths(world.plan.issues)
    found = []
    for workers in ORDER:
        # Each worker keeps its own memo: enough passes that each has read nearly every key.
        proc = server[workers]
        run = await reads.saturate(proc, paths, world, reads.CONNECTIONS, warm_rounds=WARM)
        found.append(reads.checked(run) | {"workers": workers})
    return found


async def posts(world: World, server: dict[int, Proc]) -> list[dict[str, Any]]:
    base_ms, numbers = int(time.time() * 1000) + BASE_OFFSET_MS, Sequences()
    found = []
    for workers in ORDER:
        orders = webhooks.spec(world, STEP, None, 0, base_ms)
        orders["webhooks"]["first_sequence"] = numbers.take(orders["webhooks"]["count"])
        orders["port"] = server[workers].port
        run = await measured(server[workers].pid, orders)
        found.append(run | {"workers": workers})
    return found


def add(results: Results, path: str, runs: list[dict[str, Any]], target: float | None) -> None:
    one = [run["throughput"] for run in runs if run["workers"] == 1]
    two = [run["throughput"] for run in runs if run["workers"] == 2]
    shown = " / ".join(f"{run['throughput']:,.0f}" for run in runs)
    cores = [run["cores"] for run in runs if run["workers"] == 2]
    figure = Figure(
        "7 workers",
        f"{path} saturated, WEB_CONCURRENCY=2",
        sum(two) / len(two),
        "req/s",
        sum(one) / len(one),
        "one worker, same run (ABBA)",
        better="higher",
        note=f"runs 1 / 2 / 2 / 1 workers: {shown}; cores with 2 workers {cores}",
    )
    if target is not None:
        figure.target, figure.met = f"≥ {target}x", (figure.ratio or 0) >= target
    results.add(figure)


async def run(world: World, results: Results) -> None:
    two = await start_two(world)
    try:
        server = {1: world.serve, 2: two}
        got, posted = await gets(world, server), await posts(world, server)
    finally:
        two.stop()
    results.raw["workers"] = {"get": got, "webhooks": posted}
    add(results, "GET /issues/{key}", got, 1.6)
    add(results, "webhook ingest", posted, None)
