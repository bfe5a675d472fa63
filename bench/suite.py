"""`python -m bench [--quick]`: run every scenario, print the table, write bench/results.json."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

import asyncpg

from bench import (
    db,
    fanout,
    feed,
    freshness,
    postgres,
    profile,
    reads,
    refresh,
    runs,
    scale,
    streams,
    sync,
    trust,
    webhooks,
    workers,
)
from bench.machine import describe
from bench.plan import FULL, QUICK, Plan
from bench.report import Results, table
from bench.world import World, open_world
from service.storage.embedded import start_embedded

HERE = Path(__file__).resolve().parent
Scenario = Callable[[World, Results], Awaitable[None]]
# In this order: the webhooks go last because their `updated` times are later than any
# the simulator has written, which would make its own later webhooks stale.
WORLD_SCENARIOS: dict[str, Scenario] = {
    "refresh": refresh.run,
    "reads": reads.run,
    "freshness": freshness.run,
    "webhooks": webhooks.run,
    "feed": feed.run,  # after the webhooks: its `updated` times are later still
    "workers": workers.run,  # later still
    "streams": streams.run,  # later still
    "fanout": fanout.run,  # last: it closes the API while its clients exist
}
NAMES = (*WORLD_SCENARIOS, "scale", "sync", "trust", "postgres")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts and durations")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the serve process into bench/profiles/"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    return parser.parse_args(argv)


async def admin_dsn() -> str:
    """The embedded server under .data/bench, with no database left by an earlier run."""
    dsn = await asyncio.to_thread(start_embedded, Path(".data/bench"))
    dropped = await db.drop_databases(dsn)
    if dropped:
        print(f"dropped {len(dropped)} database(s) a killed run left behind")
    return dsn


async def run(plan: Plan, only: set[str], results: Results) -> None:
    dsn = await admin_dsn()
    connection = await asyncpg.connect(dsn)
    results.machine["postgres"] = await db.server_facts(connection)
    await connection.close()
    try:
        chosen = [name for name in WORLD_SCENARIOS if name in only]
        if chosen:
            async with open_world(plan, dsn) as world:
                results.settings["serve"] = world.settings | {"DATABASE_URL": "(fresh database)"}
                results.settings["simulator"] = world.simulator_args
                for name in chosen:
                    print(f"{name}:", flush=True)
                    await WORLD_SCENARIOS[name](world, results)
        if "scale" in only:
            print("scale:", flush=True)
            await scale.run(plan, dsn, results)
        if "sync" in only:
            print("sync:", flush=True)
            await sync.run(plan, dsn, results)
        if "trust" in only:
            print("trust:", flush=True)
            await trust.run(plan, dsn, results)
        if "postgres" in only:
            print("postgres:", flush=True)
            await postgres.run(plan, dsn, results)
    finally:
        await db.drop_databases(dsn)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    plan = QUICK if args.quick else FULL
    profile.ENABLED[0] = args.profile
    runs.QUIET_LIMIT[0] = plan.quiet_limit
    only = set(args.only.split(",")) if args.only else set(NAMES)
    if unknown := only - set(NAMES):
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    results = Results(describe(), plan.mode)
    results.settings["plan"] = asdict(plan)
    start = time.monotonic()
    asyncio.run(run(plan, only, results))
    results.duration_s = time.monotonic() - start
    results.machine["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    results.write(args.out)
    print()
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0
