"""Scenario 2: signed ~5 KB webhooks at fixed rates and at saturation, each checked in the DB."""

from __future__ import annotations

import time
from typing import Any

from bench import db
from bench.report import Figure, Results
from bench.runs import calmest, measured
from bench.world import SECRET, WEBHOOK_PATH, World

OPEN_CONNECTIONS = 64
SATURATION_CONNECTIONS = 32
SATURATION_CEILING = 4000  # bodies per second of run made for the saturation step
RETRIED = (1000, None)  # the steps with a target run again if other work crowded them


def spec(world: World, step: int, rate: int | None, first: int, base_ms: int) -> dict[str, Any]:
    """The generator's orders for one step; rate None is the closed-loop saturation step."""
    seconds = world.plan.step_seconds
    count = int((rate or SATURATION_CEILING) * seconds)
    hooks = {
        "secret": SECRET,
        "step": step,
        "count": count,
        "issues": world.plan.issues,
        "first_sequence": first,
        "base_ms": base_ms,
    }
    common = {"path": WEBHOOK_PATH, "webhooks": hooks, "duration": seconds, "expect": "applied"}
    if rate is None:
        return {**common, "mode": "closed", "connections": SATURATION_CONNECTIONS, "once": True}
    return {**common, "mode": "open", "connections": OPEN_CONNECTIONS, "rate": rate}


async def applied_rows(world: World, step: int) -> dict[str, int]:
    """What the database holds of a step: its deliveries, and issues its last writes left."""
    connection = await db.connect(world.dsn)
    try:
        deliveries = await connection.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE id LIKE $1", f"bench-{step}-%"
        )
        issues = await connection.fetchval(
            "SELECT count(*) FROM issues WHERE summary LIKE $1 AND source = 'webhook'",
            f"bench step {step} %",
        )
    finally:
        await connection.close()
    return {"deliveries": deliveries, "issues": issues}


class Sequences:
    """Hands out delivery numbers, so that every delivery of the run is new and newer."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, count: int) -> int:
        first, self.next = self.next, self.next + count
        return first


async def ours_once(
    world: World, step: int, rate: int | None, numbers: Sequences, base_ms: int
) -> dict[str, Any]:
    """One run against ours with new deliveries, then what the database holds of it."""
    orders = spec(world, step, rate, 0, base_ms)
    orders["webhooks"]["first_sequence"] = numbers.take(orders["webhooks"]["count"])
    profile = "webhooks" if rate is None else None
    ours = await measured(world.serve.pid, orders | {"port": world.serve.port}, profile)
    ours["step"] = step
    ours["db"] = await applied_rows(world, step)
    ours["sent"] = ours["completed"] + sum(ours["errors"].values())
    return ours


async def step_pair(
    world: World, index: int, rate: int | None, numbers: Sequences, base_ms: int
) -> dict[str, Any]:
    """The same step against ours, checked in the DB, then against the bare endpoint."""
    retry = rate in RETRIED and world.plan.retry_crowded

    async def ours_attempt(attempt: int) -> dict[str, Any]:
        return await ours_once(world, index * 10 + attempt, rate, numbers, base_ms)

    async def bare_attempt(attempt: int) -> dict[str, Any]:
        orders = spec(world, 0, rate, 0, base_ms) | {"port": world.bare.port, "path": "/hook"}
        return await measured(world.bare.pid, orders | {"once": False})

    ours, attempts = await calmest(ours_attempt, retry)
    bare, _ = await calmest(bare_attempt, retry)
    return {"rate": rate, "ours": ours, "attempts": attempts, "bare": bare}


async def run(world: World, results: Results) -> None:
    # Later than any `updated` the simulator has written, so every delivery moves forward.
    base_ms = int(time.time() * 1000) + 1000
    numbers, steps = Sequences(), []
    for index, rate in enumerate([*world.plan.webhook_rates, None], start=1):
        pair = await step_pair(world, index, rate, numbers, base_ms)
        steps.append(pair)
        print(f"    {rate or 'saturation'}/s: {pair['ours']['throughput']:,.0f}/s", flush=True)
    results.raw["webhooks"] = steps
    for pair in steps:
        add_step(results, pair)
    add_totals(results, steps, world.plan.issues)


def add_step(results: Results, pair: dict[str, Any]) -> None:
    ours, bare, rate = pair["ours"], pair["bare"], pair["rate"]
    offered = f"{rate:,}/s offered" if rate else "saturation, 32 connections"
    note = (
        f"p50 {ours['p50_ms']} ms, p99 {ours['p99_ms']} ms (bare {bare['p99_ms']}); "
        f"cores {ours['cores']}"
    )
    figure = Figure(
        "2 webhooks",
        f"throughput, {offered}",
        ours["throughput"],
        "req/s",
        bare["throughput"],
        "bare Starlette POST, same bodies",
        better="higher",
        note=note,
    )
    if rate is None:
        figure.target, figure.met = "≥ 3,000/s", ours["throughput"] >= 3000
    results.add(figure)
    if rate == 1000:
        results.add(
            Figure(
                "2 webhooks",
                "p99 latency at 1,000/s",
                ours["p99_ms"],
                "ms",
                bare["p99_ms"],
                "bare Starlette POST at 1,000/s",
                target="≤ 30 ms",
                met=ours["p99_ms"] <= 30.0,
                note=(
                    f"p50 {ours['p50_ms']} ms; generator queueing p99 {ours['queue_p99_ms']} ms; "
                    f"others used {ours['cores']['others']} cores"
                ),
            )
        )


def add_totals(results: Results, steps: list[dict[str, Any]], issues: int) -> None:
    sent = sum(pair["ours"]["sent"] for pair in steps)
    rows = sum(pair["ours"]["db"]["deliveries"] for pair in steps)
    applied = sum(pair["ours"]["matched"] for pair in steps)
    issues_ok = all(
        pair["ours"]["db"]["issues"] == min(pair["ours"]["sent"], issues) for pair in steps
    )
    results.add(
        Figure(
            "2 webhooks",
            "deliveries applied, by the DB's rows",
            rows,
            "rows",
            sent,
            "deliveries sent",
            better="higher",
            target="= sent, none lost",
            met=rows == sent == applied and issues_ok,
            note=f"{applied:,} answered 'applied'; each step's last write on every issue it named",
        )
    )
