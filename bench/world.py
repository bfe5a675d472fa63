"""The world most scenarios share: a fresh database, the simulator, `serve` and the bare app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bench import db, procs
from bench.payloads import PROJECT
from bench.plan import Plan

EMAIL = "bench@example.com"
TOKEN = "bench-jira-token"  # noqa: S105 -- the simulator's made-up credentials
SECRET = "bench-webhook-secret-0123456789"  # noqa: S105 -- likewise
WEBHOOK_PATH = "/api/v1/webhooks/jira"


@dataclass
class World:
    plan: Plan
    dsn: str
    simulator: procs.Proc
    serve: procs.Proc
    bare: procs.Proc
    settings: dict[str, str]
    simulator_args: list[str]


def serve_settings(dsn: str, port: int, jira: str, **tuning: str) -> dict[str, str]:
    """What `serve` runs with: the loopback, the simulator, no scheduled polls."""
    return {
        "DATABASE_URL": dsn,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "JIRA_BASE_URL": jira,
        "JIRA_EMAIL": EMAIL,
        "JIRA_API_TOKEN": TOKEN,
        "JIRA_WEBHOOK_SECRET": SECRET,
        # The scheduler stays off: only the cron endpoint under test starts a poll.
        "JIRA_POLL_INTERVAL": "0",
        # Nor a sync round (on by default): the scenarios measure the poll, reads and webhooks.
        "JIRA_SYNC_INTERVAL": "0",
        "JIRA_BATCH_SIZE": "100",
        "JIRA_POLL_BATCH_SIZE": "10000",
        "JIRA_POLL_BUDGET": "600",
        **tuning,
    }


def simulator_args(issues: int, *extra: str) -> list[str]:
    return [
        "--issues", str(issues), "--projects", PROJECT, "--english",
        "--email", EMAIL, "--token", TOKEN, *extra,
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def open_world(plan: Plan, admin_dsn: str) -> AsyncIterator[World]:
    """10,000 issues in the simulator (100 ms latency, 100 requests/s) and cached, stale."""
    dsn = await db.fresh_database(admin_dsn, "world")
    connection = await db.connect(dsn)
    try:
        await db.seed(connection, 1, plan.issues, spread=0.0, links=True)
    finally:
        await connection.close()
    serve_port, sim_port = procs.free_port(), procs.free_port()
    hook = f"http://127.0.0.1:{serve_port}{WEBHOOK_PATH}"
    args = simulator_args(
        plan.issues,
        "--latency-ms", "100", "--rate-limit", "100",
        "--webhook-url", hook, "--webhook-secret", SECRET,
    )  # fmt: skip
    settings = serve_settings(
        dsn,
        serve_port,
        f"http://127.0.0.1:{sim_port}",
        # 10 requests in flight cover 100 ms x 100/s; JIRA_MAX_RPS keeps us under the limit.
        JIRA_MAX_CONCURRENCY="16",
        JIRA_MAX_RPS="100",
        # the feed and fan-out scenarios' receivers
        SUBSCRIPTION_ALLOWED_HOSTS="127.0.0.1:*",
        CLIENTS_RELOAD="0.5",  # the fan-out scenario's clients, loaded soon after they are made
        STREAM_LIMIT="2000",  # the streams scenario opens 1,000
    )
    started: list[procs.Proc] = []
    try:
        simulator = await procs.start_simulator("simulator", sim_port, args)
        started.append(simulator)
        serve = await procs.start_serve("serve", settings)
        started.append(serve)
        bare = await procs.start_bare()
        started.append(bare)
        yield World(plan, dsn, simulator, serve, bare, settings, args)
    finally:
        for proc in reversed(started):
            proc.stop()
