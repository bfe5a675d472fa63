"""Scenario 5: claim and upsert times as the tracked set grows; serve's memory in a big refresh."""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench import db, origin, procs
from bench.payloads import issue_id, issue_key
from bench.plan import Plan
from bench.report import Figure, Results
from bench.world import serve_settings, simulator_args
from service.model import Assignee, Issue, Status
from service.storage import issues as store
from service.storage import tracking
from service.storage.pool import Connection, open_pool

CLAIM = 1000
UPSERT = 10_000
LEASE = 120.0


def issues_to_write(total: int, seed: int, moment: datetime) -> list[Issue]:
    """UPSERT issues spread over the whole table, each newer than what is cached."""
    numbers = random.Random(seed).sample(range(1, total + 1), k=UPSERT)  # noqa: S311 -- a fixed sample, no secret
    status, person = Status("3", "In Progress", "indeterminate"), Assignee("a-1", "Grace Hopper")
    return [
        Issue(issue_id(n), issue_key(n), status, f"written {seed}", person, "High", moment)
        for n in numbers
    ]


async def time_claims(connection: Connection, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        # A TTL of 1 s: every due key is stale, so the claim leases rather than defers it.
        claimed, _ = await tracking.claim_due(connection, "bench-claimer", CLAIM, LEASE, 1.0)
        times.append(time.perf_counter() - start)
        if len(claimed) != CLAIM:
            raise RuntimeError(f"claimed {len(claimed)} keys, not {CLAIM}: too few due")
    return times


async def time_upserts(connection: Connection, total: int, count: int) -> list[float]:
    times = []
    for run in range(count):
        # Written now, so later than anything written before, whatever the stage.
        issues = issues_to_write(total, run, datetime.now(UTC))
        start = time.perf_counter()
        async with connection.transaction():
            outcomes = await store.upsert_issues(connection, issues, "poll")
        times.append(time.perf_counter() - start)
        if list(outcomes.values()).count("updated") != UPSERT:
            raise RuntimeError(
                f"an upsert did not update every issue: {Counter(outcomes.values())}"
            )
    return times


async def time_origin_updates(connection: Connection, total: int) -> float:
    issues = issues_to_write(total, 99, datetime.now(UTC))
    start = time.perf_counter()
    await origin.update_each(connection, issues)
    return time.perf_counter() - start


async def refresh_memory(dsn: str, issues: int) -> dict[str, Any]:
    """Peak RSS of a fresh `serve` while its cron refresh reads `issues` due issues."""
    connection = await db.connect(dsn)
    try:
        due = await db.make_all_due(connection)
    finally:
        await connection.close()
    sim_port, serve_port = procs.free_port(), procs.free_port()
    started: list[procs.Proc] = []
    try:
        sim = await procs.start_simulator("simulator-scale", sim_port, simulator_args(issues))
        started.append(sim)
        settings = serve_settings(dsn, serve_port, sim.url, JIRA_MAX_CONCURRENCY="16")
        serve = await procs.start_serve("serve-scale", settings)
        started.append(serve)
        idle = procs.rss_mb(serve.pid)
        async with aiohttp.ClientSession() as session:
            with procs.RssSampler(serve.pid) as sampler:
                start = time.perf_counter()
                async with session.get(serve.url + "/api/v1/cron/jira-refresh") as reply:
                    report = await reply.json()
                seconds = time.perf_counter() - start
        return {
            "due": due,
            "idle_mb": idle,
            "peak_mb": sampler.peak_mb,
            "samples": len(sampler.samples),
            "seconds": seconds,
            "report": {k: v for k, v in report.items() if k != "errors"},
            "settings": settings | {"DATABASE_URL": "(fresh database)"},
        }
    finally:
        for proc in reversed(started):
            proc.stop()


async def measure(
    connection: Connection, total: int, plan_claims: int, plan_upserts: int
) -> dict[str, Any]:
    claims = await time_claims(connection, plan_claims)
    upserts = await time_upserts(connection, total, plan_upserts)
    per_row = await time_origin_updates(connection, total)
    return {
        "tracked": total,
        "claim_s": statistics.median(claims),
        "claims_s": claims,
        "upsert_s": statistics.median(upserts),
        "upserts_s": upserts,
        "origin_update_s": per_row,
    }


async def grow(plan: Plan, dsn: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Seed up to each scale in turn; measure there, and the big refresh at rss_issues."""
    # The service's own pool, so that its server settings plan the statements measured.
    pool = await open_pool(dsn, 1, 1)
    stages, memory, have = [], None, 0
    try:
        async with pool.acquire() as connection:
            for total in plan.scales:
                start = time.perf_counter()
                await db.seed(connection, have + 1, total, spread=1800.0)
                seeded = time.perf_counter() - start
                have = total
                stage = await measure(connection, total, plan.claims, plan.upserts)
                stages.append(stage | {"seed_s": seeded})
                print(f"    {total:,}: claim {stage['claim_s'] * 1000:.1f} ms", flush=True)
                if total == plan.rss_issues:
                    memory = await refresh_memory(dsn, total)
    finally:
        await pool.close()
    return stages, memory


async def run(plan: Plan, admin_dsn: str, results: Results) -> None:
    dsn = await db.fresh_database(admin_dsn, "scale")
    stages, memory = await grow(plan, dsn)
    results.raw["scale"] = {"stages": stages, "refresh_memory": memory}
    first = stages[0]
    for stage in stages:
        size = f"{stage['tracked']:,} tracked"
        claim = results.add(
            Figure(
                "5 scale",
                f"claim_due of {CLAIM:,} at {size}",
                stage["claim_s"] * 1000,
                "ms",
                first["claim_s"] * 1000,
                f"the same at {first['tracked']:,} tracked",
                target="flat (≤ 2x of 10k)",
                note=f"median of {len(stage['claims_s'])}; 3/4 of the tracked keys due",
            )
        )
        claim.met = (claim.ratio or 0) <= 2.0
        results.add(
            Figure(
                "5 scale",
                f"upsert_issues of {UPSERT:,} at {size}",
                stage["upsert_s"],
                "s",
                stage["origin_update_s"],
                "origin: one UPDATE per row, same rows",
                note=f"median of {len(stage['upserts_s'])}; one transaction, one statement",
            )
        )
    if memory is not None:
        results.add(
            Figure(
                "5 scale",
                f"serve peak RSS in a cron refresh of {memory['due']:,} issues",
                memory["peak_mb"],
                "MiB",
                memory["idle_mb"],
                "the same process idle, just before",
                target="≤ 150 MB",
                met=memory["peak_mb"] * 2**20 <= 150e6,
                note=(
                    f"refresh took {memory['seconds']:.1f} s, "
                    f"{memory['report'].get('refreshed', '?'):,} refreshed; simulator at 0 ms"
                ),
            )
        )
