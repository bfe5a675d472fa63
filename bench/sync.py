"""Scenario 6: every webhook dropped, the TTL poll alone against the changed-since sync.

Time is compressed 60 times: each setting is its default divided by 60 (a TTL of 60 s
stands for the default hour, the poll and the sync run every second, the overlap is 1 s,
a synced issue is read by key after 1,440 s), so requests per TTL are requests per
simulated hour. Two worlds run side by side, each with its own simulator, database and
`serve`, and see the same changes: one with the sync off, one with it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from bench import db, procs
from bench.load import percentile
from bench.plan import Plan
from bench.refresh import reset_simulator, simulator_traffic
from bench.report import Figure, Results
from bench.world import SECRET, WEBHOOK_PATH, serve_settings, simulator_args
from jira_simulator.state import STATUSES

SCALE = 60.0  # compressed seconds: one stands for a minute
TTL = 3600 / SCALE
INTERVAL = 60 / SCALE  # the poll's and the sync's
OVERLAP = 60 / SCALE
RECHECK = 86400 / SCALE
SEARCH_LAG = 0.2  # the simulator's index lag: 12 s of real time
PROJECTS = tuple(f"S{chr(ord('A') + n)}" for n in range(20))
SAMPLE_EVERY = 10  # one change in ten is followed until a GET shows it
WATCH_EVERY = 0.1  # seconds between the reader's batch GETs of followed keys
STATUS_IDS = {status.name: status.id for status in STATUSES}
CATEGORIES = {status.name: status.category for status in STATUSES}

_SEED = """
INSERT INTO issues (id, key, status_id, status_name, status_category, summary,
                    priority, jira_updated_at, fetched_at, source, state)
SELECT id, key, sid, sname, scat, 'seeded', 'Medium', updated,
       now() - make_interval(secs => $7 * random()), 'poll', 'ok'
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
       AS t(id, key, sid, sname, scat, updated)
"""
_KEYS = "INSERT INTO issue_keys (key, issue_id) SELECT key, id FROM issues"
# Due one TTL after the fetch: the poll starts in its steady state.
_TRACKED = """
INSERT INTO tracked (key, next_due_at)
SELECT key, fetched_at + make_interval(secs => $1) FROM issues
"""


@dataclass
class Side:
    """One world: its simulator, `serve`, database, and the changes it still has to show."""

    name: str
    dsn: str
    simulator: procs.Proc
    serve_url: str = ""
    pending: dict[str, tuple[float, str]] = field(default_factory=dict)
    shown: list[float] = field(default_factory=list)
    requests: dict[str, Any] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    caught_up: float = 0.0  # seconds from the last change until the check could run


def settings(side: Side, sync: bool) -> dict[str, str]:
    """`serve` with every interval divided by 60; the sync on or off (the TTL poll alone)."""
    return serve_settings(
        side.dsn,
        procs.free_port(),
        side.simulator.url,
        JIRA_CACHE_TTL=str(TTL),
        JIRA_POLL_INTERVAL=str(INTERVAL),
        JIRA_POLL_BATCH_SIZE="1000",
        JIRA_SYNC_INTERVAL=str(INTERVAL if sync else 0),
        JIRA_SYNC_OVERLAP=str(OVERLAP),
        JIRA_SYNC_RECHECK=str(RECHECK),
        JIRA_MAX_CONCURRENCY="16",
        JIRA_MAX_RPS="100",
        LOG_LEVEL="WARNING",  # the poll and sync rounds log every second otherwise
    )


async def seed(session: aiohttp.ClientSession, side: Side) -> None:
    """Cache and track every issue of the simulator as it is: the cache starts right."""
    async with session.get(side.simulator.url + "/_sim/issues") as reply:
        issues = await reply.json()
    connection = await db.connect(side.dsn)
    try:
        await connection.execute(
            _SEED,
            [int(issue["id"]) for issue in issues],
            [issue["key"] for issue in issues],
            [STATUS_IDS[issue["status"]] for issue in issues],
            [issue["status"] for issue in issues],
            [CATEGORIES[issue["status"]] for issue in issues],
            [_parse(issue["updated"]) for issue in issues],
            TTL,
        )
        await connection.execute(_KEYS)
        await connection.execute(_TRACKED, TTL)
        await connection.execute("VACUUM ANALYZE issues, issue_keys, tracked")
    finally:
        await connection.close()


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


@contextlib.asynccontextmanager
async def open_sides(plan: Plan, admin_dsn: str) -> AsyncIterator[list[Side]]:
    """Two simulators with every webhook dropped, two seeded databases, two `serve`s."""
    started: list[procs.Proc] = []
    sides: list[Side] = []
    try:
        async with aiohttp.ClientSession() as session:
            for name in ("off", "on"):
                dsn = await db.fresh_database(admin_dsn, f"sync_{name}")
                port = procs.free_port()
                simulator = await procs.start_simulator(
                    f"simulator-sync-{name}", port, _simulator_args(plan)
                )
                started.append(simulator)
                await _drop_webhooks(session, simulator)
                side = Side(name, dsn, simulator)
                await seed(session, side)
                sides.append(side)
        for side in sides:
            serve = await procs.start_serve(
                f"serve-sync-{side.name}", settings(side, side.name == "on")
            )
            started.append(serve)
            side.serve_url = serve.url
        yield sides
    finally:
        for proc in reversed(started):
            proc.stop()


def _simulator_args(plan: Plan) -> list[str]:
    args = simulator_args(
        plan.sync_issues,
        "--latency-ms", "100", "--rate-limit", "100", "--search-lag", str(SEARCH_LAG),
        # Deliveries would go nowhere useful: every one is dropped (see _drop_webhooks).
        "--webhook-url", f"http://127.0.0.1:9{WEBHOOK_PATH}", "--webhook-secret", SECRET,
    )  # fmt: skip
    at = args.index("--projects")
    args[at + 1] = ",".join(PROJECTS)
    return args


async def _drop_webhooks(session: aiohttp.ClientSession, simulator: procs.Proc) -> None:
    async with session.patch(
        simulator.url + "/_sim/webhooks", json={"drop_probability": 1.0}
    ) as reply:
        reply.raise_for_status()


@dataclass
class Changer:
    """One change per `every` seconds, the same key in every world, open loop."""

    sides: list[Side]
    keys: list[str]
    every: float
    sampling: bool = False
    changed_at: dict[str, float] = field(default_factory=dict)
    late: float = 0.0  # seconds the changer fell behind its schedule, at most

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        pick = random.Random(9)  # noqa: S311 -- a fixed sequence, no secret
        tasks: set[asyncio.Task[None]] = set()
        start, n = time.perf_counter(), 0
        while not stop.is_set():
            delay = start + n * self.every - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.late = max(self.late, -delay)
            key = pick.choice(self.keys)
            if any(key in side.pending for side in self.sides):
                continue  # a followed key changes once, or its expected status would move
            follow = self.sampling and n % SAMPLE_EVERY == 0 and self._settled(key)
            task = asyncio.create_task(self._change(session, key, follow))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)

    def _settled(self, key: str) -> bool:
        # A key changed within the TTL may still show an older status that happens to be
        # the new one (statuses go round in three steps): follow only keys at rest.
        last = self.changed_at.get(key)
        return last is None or time.perf_counter() - last > TTL * 1.5

    async def _change(self, session: aiohttp.ClientSession, key: str, follow: bool) -> None:
        start = time.perf_counter()
        self.changed_at[key] = start
        statuses = await asyncio.gather(*(_transition(session, s, key) for s in self.sides))
        if follow:
            for side, status in zip(self.sides, statuses, strict=True):
                side.pending[key] = (start, status)


async def _transition(session: aiohttp.ClientSession, side: Side, key: str) -> str:
    async with session.post(f"{side.simulator.url}/_sim/issues/{key}/transition") as reply:
        status: str = (await reply.json())["status"]
        return status


async def watch(session: aiohttp.ClientSession, side: Side, stop: asyncio.Event) -> None:
    """Batch-GET the followed keys every WATCH_EVERY until each shows its new status."""
    url = side.serve_url + "/api/v1/issues"
    while not stop.is_set() or side.pending:
        keys = list(side.pending)
        for part in range(0, len(keys), 100):
            async with session.get(
                url, params={"keys": ",".join(keys[part : part + 100])}
            ) as reply:
                body = await reply.json()
            now = time.perf_counter()
            for issue in body["issues"]:
                start, status = side.pending.get(issue["key"], (0.0, ""))
                if issue["status"]["name"] == status:
                    side.shown.append(now - start)
                    del side.pending[issue["key"]]
        if stop.is_set() and _given_up(side, TTL * 3):
            return
        await asyncio.sleep(WATCH_EVERY)


def _given_up(side: Side, seconds: float) -> bool:
    oldest = min((start for start, _ in side.pending.values()), default=time.perf_counter())
    return time.perf_counter() - oldest > seconds


async def wrong(side: Side) -> list[str]:
    """Keys whose cached status differs from the simulator's."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(side.simulator.url + "/_sim/issues") as reply,
    ):
        truth = {issue["key"]: issue["status"] for issue in await reply.json()}
    connection = await db.connect(side.dsn)
    try:
        rows = await connection.fetch("SELECT key, status_name FROM issues")
    finally:
        await connection.close()
    cached = {row["key"]: row["status_name"] for row in rows}
    return sorted(key for key, status in truth.items() if cached.get(key) != status)


async def run(plan: Plan, admin_dsn: str, results: Results) -> None:
    async with open_sides(plan, admin_dsn) as sides:
        await measure(plan, sides)
    report(plan, sides, results)


async def measure(plan: Plan, sides: list[Side]) -> None:
    keys = [
        f"{PROJECTS[n % len(PROJECTS)]}-{n // len(PROJECTS) + 1}" for n in range(plan.sync_issues)
    ]
    changer = Changer(sides, keys, plan.sync_change_every)
    stop_changes, stop_watch = asyncio.Event(), asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        changing = asyncio.create_task(changer.run(session, stop_changes))
        # One TTL first: every issue read once since the sync's coverage began.
        print(f"  warming up for {TTL * 1.1:.0f} s", flush=True)
        await asyncio.sleep(TTL * 1.1)
        for side in sides:
            await reset_simulator(session, side)
        changer.sampling = True
        watching = [asyncio.create_task(watch(session, side, stop_watch)) for side in sides]
        print(f"  measuring for {plan.sync_measure:.0f} s", flush=True)
        await asyncio.sleep(plan.sync_measure)
        for side in sides:
            side.requests = await simulator_traffic(session, side)
            side.requests["serve_sync_metrics"] = await _sync_metrics(session, side)
        stop_changes.set()
        await changing
        stopped = time.perf_counter()
        stop_watch.set()
        sides[1].wrong, sides[0].wrong, _ = await asyncio.gather(
            _wrong_once_verified(sides[1]),
            _wrong_at(sides[0], stopped + TTL + INTERVAL + 2),
            asyncio.gather(*watching),
        )
    print(f"  changer at most {changer.late * 1000:.0f} ms behind", flush=True)


async def _sync_metrics(session: aiohttp.ClientSession, side: Side) -> list[str]:
    """The serve's sync counters (rounds, pages, seconds) so far: what a round cost."""
    async with session.get(side.serve_url + "/metrics") as reply:
        text = await reply.text()
    return [line for line in text.splitlines() if line.startswith("jsc_sync_")]


async def _wrong_at(side: Side, moment: float) -> list[str]:
    """The TTL poll's check: one TTL (and a poll) after the last change."""
    await asyncio.sleep(max(0.0, moment - time.perf_counter()))
    return await wrong(side)


async def _wrong_once_verified(side: Side) -> list[str]:
    """The sync's check: once every project's watermark passed the last change (and the
    index lag), which is when the sync claims the cache is current."""
    connection = await db.connect(side.dsn)
    try:
        stopped = time.perf_counter()
        after = await connection.fetchval(
            "SELECT now() + make_interval(secs => $1::float8)", SEARCH_LAG
        )
        while time.perf_counter() - stopped < TTL * 2:
            oldest = await connection.fetchval("SELECT min(verified_at) FROM sync_projects")
            if oldest is not None and oldest >= after:
                break
            await asyncio.sleep(WATCH_EVERY)
        side.caught_up = time.perf_counter() - stopped
    finally:
        await connection.close()
    return await wrong(side)


def report(plan: Plan, sides: list[Side], results: Results) -> None:
    off, on = sides
    per_hour = {side.name: _per_hour(plan, side) for side in sides}
    p99 = {side.name: _p99(side) for side in sides}
    results.raw["sync"] = {
        side.name: {
            "requests": side.requests,
            "requests_per_simulated_hour": per_hour[side.name],
            "shown_s": side.shown,
            "lost": len(side.pending),
            "wrong": len(side.wrong),
            "wrong_sample": side.wrong[:20],
            "checked_after_s": side.caught_up,
        }
        for side in sides
    }
    scene = (
        f"{plan.sync_issues:,} tracked in {len(PROJECTS)} projects, a change per "
        f"{plan.sync_change_every * 1000:.0f} ms, webhooks dropped"
    )
    clean = not on.wrong
    fewer = per_hour["off"] / per_hour["on"] if per_hour["on"] else float("inf")
    results.add(
        Figure(
            "6 sync",
            f"Jira requests per simulated hour ({scene})",
            per_hour["on"],
            "requests",
            per_hour["off"],
            "sync off: the TTL poll alone",
            target="≥ 5x fewer",
            met=fewer >= 5 and clean,
            note=f"{_by_endpoint(on)}; sync off: {_by_endpoint(off)}",
        )
    )
    lower = p99["off"] / p99["on"] if p99["on"] else float("inf")
    results.add(
        Figure(
            "6 sync",
            f"change in Jira to GET showing it, p99 of {len(on.shown)} (s, simulated x60)",
            p99["on"],
            "s",
            p99["off"],
            "sync off: the TTL poll alone",
            target="≥ 30x lower",
            met=lower >= 30 and clean,
            note=(
                f"p50 {_p(on, 0.5):.2f} s against {_p(off, 0.5):.1f} s; "
                f"{len(on.pending)} and {len(off.pending)} never shown; "
                f"GETs every {WATCH_EVERY * 1000:.0f} ms"
            ),
        )
    )
    results.add(
        Figure(
            "6 sync",
            "issues whose cached status differs from Jira's once the changes stop",
            len(on.wrong),
            "issues",
            len(off.wrong),
            "sync off",
            target="0",
            met=clean,
            note=(
                f"checked once every sync watermark passed the last change, "
                f"{on.caught_up:.1f} s after it; sync off: one TTL + a poll after it"
            ),
        )
    )


def _per_hour(plan: Plan, side: Side) -> float:
    """Requests over the measured stretch, per TTL: a TTL stands for one hour."""
    total = sum(side.requests.get("by_endpoint", {}).values())
    return float(total) * TTL / plan.sync_measure


def _by_endpoint(side: Side) -> str:
    counts = side.requests.get("by_endpoint", {})
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def _p99(side: Side) -> float:
    return _p(side, 0.99) if not side.pending else float("inf")


def _p(side: Side, fraction: float) -> float:
    return percentile(side.shown, fraction) if side.shown else float("nan")
