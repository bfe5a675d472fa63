"""Scenario 3: reads of cached issues, against a bare Starlette endpoint in the same run."""

from __future__ import annotations

import random
from typing import Any

from bench.payloads import issue_key
from bench.procs import Proc
from bench.report import Figure, Results
from bench.runs import Attempt, calmest, measured
from bench.world import World

CONNECTIONS = 32
BATCH = 100


def one_key_paths(count: int) -> list[str]:
    paths = [f"/api/v1/issues/{issue_key(n)}" for n in range(1, count + 1)]
    random.Random(7).shuffle(paths)  # noqa: S311 -- a fixed sample, no secret
    return paths


def batch_paths(count: int) -> list[str]:
    numbers = list(range(1, count + 1))
    random.Random(8).shuffle(numbers)  # noqa: S311 -- a fixed sample, no secret
    groups = [numbers[i : i + BATCH] for i in range(0, count, BATCH)]
    return ["/api/v1/issues?keys=" + ",".join(map(issue_key, group)) for group in groups]


async def saturate(
    proc: Proc,
    paths: list[str],
    world: World,
    connections: int,
    profile: str | None = None,
    warm_rounds: int = 1,
) -> dict[str, Any]:
    plan = world.plan
    spec = {
        "warm_rounds": warm_rounds,
        "mode": "closed",
        "port": proc.port,
        "connections": connections,
        "warm_pass": len(paths),
        "duration": plan.step_seconds,
        "paths": paths,
        "expect": '"key"',
    }
    return await measured(proc.pid, spec, profile)


async def at_rate(proc: Proc, paths: list[str], world: World, rate: float) -> dict[str, Any]:
    spec = {
        "mode": "open",
        "port": proc.port,
        "connections": CONNECTIONS * 2,
        "rate": rate,
        "warm_pass": len(paths),
        "duration": world.plan.step_seconds,
        "paths": paths,
        "expect": '"key"',
    }
    return await measured(proc.pid, spec)


def checked(result: dict[str, Any]) -> dict[str, Any]:
    """A run whose answers were not all 200s with an issue in them measures nothing."""
    if (
        result["statuses"] != {"200": result["completed"]}
        or result["matched"] != result["completed"]
    ):
        raise RuntimeError(f"reads answered other than 200 with an issue: {result}")
    return result


async def calm(attempt: Attempt, retry: bool) -> dict[str, Any]:
    """A run with a target: once more if other work crowded the machine meanwhile."""
    result, attempts = await calmest(attempt, retry)
    result["attempts"] = [{"throughput": a["throughput"], "cores": a["cores"]} for a in attempts]
    return checked(result)


async def run(world: World, results: Results) -> None:
    plan = world.plan
    ours_paths = one_key_paths(plan.issues)
    bare_paths = ["/issue/" + path.rsplit("/", 1)[1] for path in ours_paths]
    retry = plan.retry_crowded
    bare_sat = await calm(lambda _: saturate(world.bare, bare_paths, world, CONNECTIONS), retry)
    ours_sat = await calm(
        lambda _: saturate(world.serve, ours_paths, world, CONNECTIONS, "reads"), retry
    )
    half = round(ours_sat["throughput"] / 2)
    ours_half = await calm(lambda _: at_rate(world.serve, ours_paths, world, half), retry)
    bare_half = await calm(lambda _: at_rate(world.bare, bare_paths, world, half), retry)
    groups = batch_paths(plan.issues)
    batch = checked(await saturate(world.serve, groups, world, 4, "reads_batch"))
    results.raw["reads"] = {
        "bare_saturation": bare_sat,
        "ours_saturation": ours_sat,
        "ours_at_half": ours_half,
        "bare_at_half": bare_half,
        "ours_batch_saturation": batch,
    }
    share = results.add(
        Figure(
            "3 reads",
            f"GET /issues/{{key}} saturation, {CONNECTIONS} connections",
            ours_sat["throughput"],
            "req/s",
            bare_sat["throughput"],
            "bare Starlette, constant JSON",
            better="higher",
            target="≥ 0.50 of bare",
            note=(
                f"after one pass over every key, which ran at "
                f"{ours_sat['warm_pass']['throughput']:,.0f}/s; p99 {ours_sat['p99_ms']} vs "
                f"{bare_sat['p99_ms']} ms; cores {ours_sat['cores']}"
            ),
        )
    )
    share.met = (share.ratio or 0) >= 0.5
    results.add(
        Figure(
            "3 reads",
            f"GET /issues/{{key}} p99 at half saturation ({half:,}/s, open loop)",
            ours_half["p99_ms"],
            "ms",
            bare_half["p99_ms"],
            "bare Starlette at the same rate",
            target="≤ 10 ms",
            met=ours_half["p99_ms"] <= 10.0,
            note=(
                f"p50 {ours_half['p50_ms']} ms; achieved {ours_half['throughput']:,.0f}/s; "
                f"cores {ours_half['cores']}"
            ),
        )
    )
    results.add(
        Figure(
            "3 reads",
            f"GET /issues?keys= ({BATCH} keys), 4 connections",
            batch["throughput"] * BATCH,
            "issues/s",
            ours_sat["throughput"],
            "one key per GET, saturated",
            better="higher",
            target="≥ 10x",
            met=batch["throughput"] * BATCH >= 10 * ours_sat["throughput"],
            note=f"{batch['throughput']:,.0f} req/s, p99 {batch['p99_ms']} ms",
        )
    )
