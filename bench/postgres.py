"""Scenario `postgres`: PostgreSQL as it runs in production.

1. The same `serve`, once with DATABASE_URL direct and once through PgBouncer in transaction
   mode (its listener direct), over one database, one after the other: webhook ingest and
   `GET /issues/{key}` at saturation (with the memo, as deployed, and without it, every read
   from PostgreSQL).
2. A failover: a primary and a synchronous streaming standby (tests/cluster.py), `serve` on
   both hosts (`target_session_attrs=read-write`), webhooks and reads sent continuously; the
   primary SIGKILLed, the standby promoted: how long until writes are accepted again, and how
   reads fared in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bench import db, procs
from bench.payloads import body, issue_key
from bench.plan import Plan
from bench.reads import one_key_paths
from bench.report import Figure, Results
from bench.runs import measured
from bench.world import SECRET, WEBHOOK_PATH, serve_settings, simulator_args
from tests.bouncer import Bouncer
from tests.cluster import Cluster

CONNECTIONS = 32
ROUNDS = 3
SECTION = "8 postgres"
FAILOVER_ISSUES = 200
WRITTEN = FAILOVER_ISSUES // 2  # issues 1-100 take the webhooks, 101-200 the reads


async def run(plan: Plan, admin_dsn: str, results: Results) -> None:
    dsn = await db.fresh_database(admin_dsn, "postgres")
    connection = await db.connect(dsn)
    try:
        await db.seed(connection, 1, plan.issues, spread=0.0)
    finally:
        await connection.close()
    bouncer = await asyncio.to_thread(Bouncer(admin_dsn).start)
    try:
        raw = await _side_by_side(plan, dsn, bouncer)
    finally:
        await asyncio.to_thread(bouncer.stop)
    results.raw["postgres"] = raw
    _add_pgbouncer(results, raw)
    failover = await _failover(plan)
    results.raw["postgres"]["failover"] = failover
    _add_failover(results, failover)


@contextlib.asynccontextmanager
async def _simulated(plan: Plan) -> AsyncIterator[str]:
    """A quiet simulator for `serve` to start against (no read here goes to Jira)."""
    port = procs.free_port()
    simulator = await procs.start_simulator("pg-simulator", port, simulator_args(plan.issues))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        simulator.stop()


@contextlib.asynccontextmanager
async def _serving(jira: str, **database: str) -> AsyncIterator[procs.Proc]:
    settings = serve_settings("", procs.free_port(), jira) | database
    serve = await procs.start_serve(f"serve-{database.get('DATABASE_POOLER', 'none')}", settings)
    try:
        yield serve
    finally:
        serve.stop()


async def _side_by_side(plan: Plan, dsn: str, bouncer: Bouncer) -> dict[str, Any]:
    """Both `serve`s up at once; each measurement alternates them, ROUNDS times, so that
    other work on the machine falls on both alike; the best round of each is reported."""
    ways = {
        "direct": {"DATABASE_URL": dsn},
        "pgbouncer": {
            "DATABASE_URL": bouncer.through(dsn),
            "DATABASE_LISTEN_URL": dsn,
            "DATABASE_POOLER": "transaction",
        },
    }
    raw: dict[str, Any] = {}
    numbers = [0, int(time.time() * 1000) + 1000]  # next delivery, base `updated` ms
    async with _simulated(plan) as jira:
        for memo in ("20000", "0"):
            async with (
                _serving(jira, MEMO_SIZE=memo, **ways["direct"]) as direct,
                _serving(jira, MEMO_SIZE=memo, **ways["pgbouncer"]) as pooled,
            ):
                serves = {"direct": direct, "pgbouncer": pooled}
                kinds = ["webhooks", "reads"] if memo != "0" else ["reads"]
                for kind in kinds:
                    name = kind if kind == "webhooks" else f"reads_memo{memo}"
                    for way, serve in [*serves.items()] * ROUNDS:
                        spec = (
                            _hooks(plan, len(raw) + 1, numbers)
                            if kind == "webhooks"
                            else _reads(plan)
                        )
                        run = await measured(serve.pid, spec | {"port": serve.port})
                        raw.setdefault(f"{name}_{way}", []).append(run)
                    print(f"    {name}: done", flush=True)
    return raw


def _hooks(plan: Plan, step: int, numbers: list[int]) -> dict[str, Any]:
    count = int(4000 * plan.step_seconds)
    hooks = {
        "secret": SECRET,
        "step": step,
        "count": count,
        "issues": plan.issues,
        "first_sequence": numbers[0],
        "base_ms": numbers[1],
    }
    numbers[0] += count
    return {
        "path": WEBHOOK_PATH,
        "webhooks": hooks,
        "duration": plan.step_seconds,
        "expect": "applied",
        "mode": "closed",
        "connections": CONNECTIONS,
        "once": True,
    }


def _reads(plan: Plan) -> dict[str, Any]:
    paths = one_key_paths(plan.issues)
    return {
        "mode": "closed",
        "connections": CONNECTIONS,
        "warm_pass": len(paths),
        "duration": plan.step_seconds,
        "paths": paths,
        "expect": '"key"',
    }


def _add_pgbouncer(results: Results, raw: dict[str, Any]) -> None:
    pairs = [
        ("webhooks", "webhook ingest, saturation"),
        ("reads_memo20000", "GET /issues/{key} saturation, memo on"),
        ("reads_memo0", "GET /issues/{key} saturation, MEMO_SIZE=0 (every read from PostgreSQL)"),
    ]
    for name, metric in pairs:
        ours = max(raw[f"{name}_pgbouncer"], key=lambda run: run["throughput"])
        base = max(raw[f"{name}_direct"], key=lambda run: run["throughput"])
        rounds = [round(run["throughput"]) for run in raw[f"{name}_pgbouncer"]]
        rounds_direct = [round(run["throughput"]) for run in raw[f"{name}_direct"]]
        statuses = ours["statuses"]
        figure = results.add(
            Figure(
                SECTION,
                f"{metric}, {CONNECTIONS} connections, through PgBouncer (transaction mode)",
                ours["throughput"],
                "req/s",
                base["throughput"],
                "the same, DATABASE_URL direct",
                better="higher",
                target="≥ 0.8 of direct",
                note=(
                    f"best of {ROUNDS} alternating rounds: {rounds} vs {rounds_direct}/s; p99 "
                    f"{ours['p99_ms']} vs {base['p99_ms']} ms; PgBouncer's CPU counts under "
                    f"others: cores {ours['cores']}"
                ),
            )
        )
        figure.met = (figure.ratio or 0) >= 0.8 and statuses == {"200": ours["completed"]}


async def _failover(plan: Plan) -> dict[str, Any]:
    cluster = await asyncio.to_thread(Cluster(synchronous=True).start)
    try:
        connection = await db.connect(cluster.node_dsn(0))
        try:
            from service.storage import migrate

            await migrate.apply_migrations(connection)
            await db.seed(connection, 1, FAILOVER_ISSUES, spread=0.0)
        finally:
            await connection.close()
        async with _simulated(plan) as jira, _serving(jira, DATABASE_URL=cluster.dsn) as serve:
            return await _through_failover(cluster, serve)
    finally:
        await asyncio.to_thread(cluster.stop)


async def _through_failover(cluster: Cluster, serve: procs.Proc) -> dict[str, Any]:
    log: list[tuple[float, str, int]] = []  # (time, "write" | "read", status)
    stop = asyncio.Event()
    async with aiohttp.ClientSession(serve.url) as session:
        for number in range(1, FAILOVER_ISSUES + 1):  # the memo holds every issue
            async with session.get(f"/api/v1/issues/{issue_key(number)}") as reply:
                await reply.read()
        tasks = [
            asyncio.create_task(_writes(session, log, stop)),
            asyncio.create_task(_reads_loop(session, log, stop)),
        ]
        await asyncio.sleep(2.0)  # steady traffic before
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill_primary)
        await asyncio.to_thread(cluster.promote)
        promoted = time.monotonic()
        while not any(t > promoted and kind == "write" and s == 200 for t, kind, s in log):
            if time.monotonic() - promoted > 60:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(2.0)  # steady traffic after
        stop.set()
        await asyncio.gather(*tasks)
    return _summary(log, killed, promoted)


async def _writes(session: aiohttp.ClientSession, log: list[Any], stop: asyncio.Event) -> None:
    sequence, base_ms = 0, int(time.time() * 1000) + 1000
    while not stop.is_set():
        sequence += 1
        # The first half of the issues only: the reads go to the other half.
        data = body(sequence % WRITTEN + 1, 99, sequence, base_ms + sequence)
        signature = hmac.new(SECRET.encode(), data, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Atlassian-Webhook-Identifier": f"failover-{sequence}",
            "X-Hub-Signature": f"sha256={signature}",
        }
        async with session.post(WEBHOOK_PATH, data=data, headers=headers) as reply:
            await reply.read()
            log.append((time.monotonic(), "write", reply.status))
        await asyncio.sleep(0.005)


async def _reads_loop(session: aiohttp.ClientSession, log: list[Any], stop: asyncio.Event) -> None:
    number = WRITTEN
    while not stop.is_set():
        number = number + 1 if number < FAILOVER_ISSUES else WRITTEN + 1
        async with session.get(f"/api/v1/issues/{issue_key(number)}") as reply:
            await reply.read()
            log.append((time.monotonic(), "read", reply.status))
        await asyncio.sleep(0.002)


def _summary(log: list[tuple[float, str, int]], killed: float, promoted: float) -> dict[str, Any]:
    after = [t for t, kind, s in log if kind == "write" and s == 200 and t > promoted]
    accepted = (after[0] - promoted) if after else float("nan")
    outage_end = after[0] if after else promoted
    outage = [s for t, kind, s in log if kind == "read" and killed <= t <= outage_end]
    statuses: dict[str, dict[int, int]] = {"write": {}, "read": {}}
    for _, kind, status in log:
        statuses[kind][status] = statuses[kind].get(status, 0) + 1
    return {
        "writes_accepted_after_promotion_s": round(accepted, 3),
        "promotion_after_kill_s": round(promoted - killed, 3),
        "reads_in_outage": len(outage),
        "reads_in_outage_served": outage.count(200),
        "statuses": statuses,
    }


def _add_failover(results: Results, failover: dict[str, Any]) -> None:
    accepted = failover["writes_accepted_after_promotion_s"]
    statuses = failover["statuses"]
    no_500 = all(500 not in answers for answers in statuses.values())
    results.add(
        Figure(
            SECTION,
            "failover: writes accepted again after the standby's promotion",
            accepted,
            "s",
            None,
            "",
            target="≤ 10 s",
            met=accepted <= 10.0 and no_500,
            note=(
                f"primary SIGKILLed, synchronous standby promoted "
                f"{failover['promotion_after_kill_s']} s later; answers {statuses}"
            ),
        )
    )
    served, total = failover["reads_in_outage_served"], failover["reads_in_outage"]
    results.add(
        Figure(
            SECTION,
            "failover: reads served (from the memo) between the kill and the first write",
            served,
            "reads",
            total,
            "reads sent then",
            better="higher",
            target="all",
            met=served == total,
            note="reads of issues no webhook changed meanwhile, which the memo held",
        )
    )
