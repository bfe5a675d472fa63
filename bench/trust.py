"""Scenario 7: freshness you can trust. Four ways the cache used to stay wrong silently, each
against a real `serve` (or two) and a simulator process, webhooks dropped unless said:

- a replica killed (SIGKILL) mid-round: seconds until another has healed every change;
- changes made at a minute's last second (:59.5), Jira comparing `updated` to the minute,
  against the same changes at :30 (the baseline);
- Jira's clock 90 s behind ours, against Jira on time: keys still wrong after 2 intervals;
- 10,000 changes (2,000 with --quick) inside the window, Data Center: search pages read per
  round afterwards, with webhooks arriving (the lag is seen, the overlap follows it) against
  webhooks lost (the lag is unseen, the whole JIRA_SYNC_OVERLAP is read again).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

import aiohttp

from bench import db, procs
from bench.plan import Plan
from bench.report import Figure, Results
from bench.sync import Side, seed, wrong
from bench.world import SECRET, WEBHOOK_PATH, serve_settings, simulator_args

PROJECTS = ("TA", "TB", "TC", "TD")
ROUNDS = 3  # rounds measured after the one that reads the burst
POLL = 0.1  # seconds between checks of the database


@dataclass
class Pair:
    """A simulator, the serves reading it, and their database."""

    side: Side
    serves: list[procs.Proc]


@contextlib.asynccontextmanager
async def pair(
    name: str, admin_dsn: str, issues: int, sim: list[str], tuning: dict[str, str], serves: int = 1
) -> AsyncIterator[Pair]:
    started: list[procs.Proc] = []
    try:
        dsn = await db.fresh_database(admin_dsn, f"trust_{name}")
        args = simulator_args(issues, "--webhook-secret", SECRET, *sim)
        args[args.index("--projects") + 1] = ",".join(PROJECTS)
        simulator = await procs.start_simulator(f"simulator-trust-{name}", procs.free_port(), args)
        started.append(simulator)
        side = Side(name, dsn, simulator)
        async with aiohttp.ClientSession() as session:
            await patch(session, simulator.url + "/_sim/webhooks", {"drop_probability": 1.0})
            await seed(session, side)
        running = []
        for n in range(serves):
            settings = serve_settings(
                dsn, procs.free_port(), simulator.url, LOG_LEVEL="INFO", **tuning
            )
            serve = await procs.start_serve(f"serve-trust-{name}-{n}", settings)
            started.append(serve)
            running.append(serve)
        side.serve_url = running[0].url
        yield Pair(side, running)
    finally:
        for proc in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                proc.stop()


async def patch(session: aiohttp.ClientSession, url: str, body: Mapping[str, object]) -> None:
    async with session.patch(url, json=body) as reply:
        reply.raise_for_status()


async def change(session: aiohttp.ClientSession, side: Side, keys: list[str]) -> None:
    gate = asyncio.Semaphore(64)

    async def one(key: str) -> None:
        async with gate, session.post(f"{side.simulator.url}/_sim/issues/{key}/transition"):
            pass

    await asyncio.gather(*(one(key) for key in keys))


async def until(check: Callable[[], Awaitable[bool]], within: float) -> float | None:
    """Seconds until `check` holds, or None past `within`."""
    start = time.perf_counter()
    while time.perf_counter() - start < within:
        if await check():
            return time.perf_counter() - start
        await asyncio.sleep(POLL)
    return None


async def healed(side: Side, keys: list[str]) -> bool:
    return not set(await wrong(side)) & set(keys)


def keys_of(count: int) -> list[str]:
    return [f"{PROJECTS[n % len(PROJECTS)]}-{n // len(PROJECTS) + 1}" for n in range(count)]


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url + "/metrics") as reply:
        text = await reply.text()
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(found[1]) if found else 0.0


async def round_seconds(session: aiohttp.ClientSession, url: str) -> float:
    total = await metric(session, url, "jsc_sync_round_seconds_sum")
    count = await metric(session, url, "jsc_sync_round_seconds_count")
    return total / count if count else float("nan")


# 1. A replica killed mid-round.


async def killed(plan: Plan, admin_dsn: str, results: Results) -> None:
    interval, issues = 2.0, 400 if plan.quick else 2000
    tuning = {"JIRA_SYNC_INTERVAL": str(interval), "JIRA_SYNC_OVERLAP": "10"}
    sim = ["--latency-ms", "150"]
    async with (
        pair("kill", admin_dsn, issues, sim, tuning, serves=2) as world,
        aiohttp.ClientSession() as session,
    ):
        victim, survivor = world.serves
        connection = await db.connect(world.side.dsn)
        try:

            async def synced() -> bool:
                left = await connection.fetchval(
                    "SELECT count(*) FROM sync_projects WHERE verified_at IS NULL"
                )
                return bool(left == 0)

            await until(synced, 60)
            keys = keys_of(200)
            await change(session, world.side, keys)
            owner = f"%:{victim.pid}:%"

            async def holding() -> bool:
                held = await connection.fetchval(
                    "SELECT count(*) FROM sync_projects WHERE lease_owner LIKE $1", owner
                )
                return bool(held)

            seen = await until(holding, 30)
            os.kill(victim.pid, signal.SIGKILL)
            heal = await until(partial(healed, world.side, keys), 120)
        finally:
            await connection.close()
        one_round = await round_seconds(session, survivor.url)
    log = (procs.LOGS / f"{survivor.name}.log").read_text(errors="replace")
    target = 2 * interval + one_round
    results.raw.setdefault("trust", {})["kill"] = {
        "held_before_kill_s": seen,
        "healed_s": heal,
        "round_s": one_round,
        "takeover_logged": "took over" in log,
    }
    results.add(
        Figure(
            "7 trust",
            f"SIGKILL of a replica mid-round to all 200 changes healed by the other (s; sync "
            f"every {interval:g} s)",
            math.inf if heal is None else heal,
            "s",
            None,
            "",
            target=f"≤ 2 intervals + a round ({target:.1f} s)",
            met=heal is not None and heal <= target,
            note=f"takeover logged: {'took over' in log}; a round took {one_round:.2f} s",
        )
    )


# 2. Changes in a minute's last second.


async def last_second(plan: Plan, admin_dsn: str, results: Results) -> None:
    interval, trials = 5.0, 2 if plan.quick else 4
    tuning = {"JIRA_SYNC_INTERVAL": str(interval), "JIRA_SYNC_OVERLAP": "10"}
    async with (
        pair("minute", admin_dsn, 200, ["--minute-precision"], tuning) as world,
        aiohttp.ClientSession() as session,
    ):
        offset, pick = 0.0, iter(keys_of(200))
        found: dict[str, list[float | None]] = {":59.5": [], ":30": []}
        for _ in range(trials):
            for label, into in ((":59.5", 59.5), (":30", 30.0)):
                offset = _offset_to(offset, into)
                url = world.side.simulator.url + "/_sim/options"
                await patch(session, url, {"clock_offset": offset})
                keys = [next(pick) for _ in range(5)]
                await change(session, world.side, keys)
                found[label].append(await until(partial(healed, world.side, keys), 30))
        one_round = await round_seconds(session, world.side.serve_url)
    bound = interval + one_round
    share = {label: sum(1 for t in times if t is not None and t <= bound) / len(times)
             for label, times in found.items()}  # fmt: skip
    results.raw.setdefault("trust", {})["minute"] = {"healed_s": found, "bound_s": bound}
    results.add(
        Figure(
            "7 trust",
            f"changes at :59.5 healed within an interval and a round ({trials} x 5, Jira "
            "comparing to the minute, interval 5 s, overlap 10 s)",
            100 * share[":59.5"],
            "%",
            100 * share[":30"],
            "the same changes at :30",
            better="higher",
            target="100%",
            met=share[":59.5"] == 1.0,
            note=f"seconds: {_times(found[':59.5'])}; at :30 {_times(found[':30'])}",
        )
    )


def _offset_to(offset: float, into: float) -> float:
    """The clock offset putting Jira's clock at the next `into` seconds past a minute,
    at least 2 s ahead: Jira's clock only moves forward."""
    jira = time.time() + offset + 2.0
    target = math.floor(jira / 60) * 60 + into
    target = target if target >= jira else target + 60
    return target - time.time()


def _times(times: list[float | None]) -> str:
    return ", ".join("never" if t is None else f"{t:.1f}" for t in times)


# 3. Jira's clock 90 s behind.


async def skewed(plan: Plan, admin_dsn: str, results: Results) -> None:
    interval, issues = 5.0, 1200
    tuning = {"JIRA_SYNC_INTERVAL": str(interval), "JIRA_SYNC_OVERLAP": "60"}
    async with (
        pair("skew", admin_dsn, issues, ["--clock-offset", "-90"], tuning) as world,
        aiohttp.ClientSession() as session,
    ):
        stale = {}
        # Behind first: Jira's clock only moves forward, so "on time" comes second.
        for label, keys in (("behind", keys_of(300)), ("on time", keys_of(600)[300:])):
            if label == "on time":
                await patch(
                    session, world.side.simulator.url + "/_sim/options", {"clock_offset": 0}
                )
                await asyncio.sleep(interval)  # a round measures the new clock
            await change(session, world.side, keys)
            await asyncio.sleep(2 * interval)
            stale[label] = len(set(await wrong(world.side)) & set(keys))
    results.raw.setdefault("trust", {})["skew"] = stale
    results.add(
        Figure(
            "7 trust",
            "keys still wrong 2 intervals after 300 changes, Jira's clock 90 s behind "
            "(interval 5 s, overlap 60 s)",
            stale["behind"],
            "keys",
            stale["on time"],
            "Jira's clock on time",
            target="0",
            met=stale["behind"] == 0,
        )
    )


# 4. The re-read cost of a busy window.


async def reread(plan: Plan, admin_dsn: str, results: Results) -> None:
    count = 2000 if plan.quick else 10_000
    interval, settle = 5.0, 240.0  # settle: the longest wait for ROUNDS rounds
    tuning = {"JIRA_SYNC_INTERVAL": str(interval), "JIRA_SYNC_OVERLAP": "60"}
    sim = ["--flavor", "dc", "--pat", "bench-pat"]
    dc = {**tuning, "JIRA_FLAVOR": "dc", "JIRA_PAT": "bench-pat"}
    pages: dict[str, float] = {}
    async with (
        pair("reread_lost", admin_dsn, count, sim, dc) as lost,
        pair("reread_ours", admin_dsn, count, sim, dc) as ours,
        aiohttp.ClientSession() as session,
    ):
        keys = keys_of(count)
        await _one_webhook(session, ours, keys.pop())
        await asyncio.gather(*(change(session, w.side, keys) for w in (lost, ours)))
        # The two rounds ending after the burst read it (once in each world: the first may
        # have begun during it); the next ones read again only what each overlap holds.
        start = await asyncio.gather(*(_next_round(session, w, 2) for w in (lost, ours)))
        end = await asyncio.gather(*(_next_round(session, w, ROUNDS, settle) for w in (lost, ours)))
        for world, (p0, r0), (p1, r1) in zip((lost, ours), start, end, strict=True):
            pages[world.side.name] = (p1 - p0) / (r1 - r0) if r1 > r0 else float("nan")
    results.raw.setdefault("trust", {})["reread"] = pages
    results.add(
        Figure(
            "7 trust",
            f"search pages per round, {ROUNDS} rounds after the two that read {count:,} changes "
            "(Data Center, interval 5 s, overlap 60 s)",
            pages["reread_ours"],
            "pages",
            pages["reread_lost"],
            "webhooks lost: the lag unseen, the whole overlap read again",
            target="≤ changes since the last verified point / 100, + the lag margin",
            met=pages["reread_ours"] <= 1.5,
            note="no change after the burst: one page per round is the floor",
        )
    )


async def _one_webhook(session: aiohttp.ClientSession, world: Pair, key: str) -> None:
    """One change whose webhook reaches `serve`: webhooks arrive, so the lag can be seen
    (0 here); the burst's own webhooks are dropped, to time the sync alone."""
    hooks = world.side.simulator.url + "/_sim/webhooks"
    options = {"webhook_url": world.side.serve_url + WEBHOOK_PATH}
    await patch(session, world.side.simulator.url + "/_sim/options", options)
    await patch(session, hooks, {"drop_probability": 0.0})
    await change(session, world.side, [key])
    async with session.post(hooks + "/drain"):
        pass
    await patch(session, hooks, {"drop_probability": 1.0})


async def _rounds(session: aiohttp.ClientSession, world: Pair) -> tuple[float, float]:
    url = world.side.serve_url
    pages = await metric(session, url, "jsc_sync_pages_total")
    return pages, await metric(session, url, "jsc_sync_round_seconds_count")


async def _next_round(
    session: aiohttp.ClientSession, world: Pair, count: int = 1, within: float = 300.0
) -> tuple[float, float]:
    """Pages and rounds once `count` more rounds ended (or `within` seconds passed)."""
    _, rounds = await _rounds(session, world)

    async def ended() -> bool:
        return (await _rounds(session, world))[1] >= rounds + count

    await until(ended, within)
    return await _rounds(session, world)


async def run(plan: Plan, admin_dsn: str, results: Results) -> None:
    for part in (killed, last_second, skewed, reread):
        print(f"  {part.__name__}", flush=True)
        await part(plan, admin_dsn, results)
