"""Scenario 8: 1,000 SSE streams open while webhooks arrive at 200/s, beside the same run with none.

Each stream follows its own 10 keys (`keys=`), so that every change is an event on exactly
one stream and every stream gets events: a stream per consuming team. Measured in both
runs: webhook and `GET` latency (open loop), and how often PostgreSQL reads the change log
per change (the `changes` table's scans, from pg_stat_user_tables, and the hub's reads);
with the streams, also each event's latency from its webhook's due time, on every stream,
and the peak RSS of `serve`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]  # no stubs in the venv; only bench uses it

from bench import db, procs
from bench.load import percentile
from bench.payloads import PROJECT, signed_bodies
from bench.report import Figure, Results
from bench.world import SECRET, WEBHOOK_PATH, World

RATE = 200  # changes per second
GET_RATE = 100  # reads per second beside them
WAVE = 100  # streams opening at once
GIVE_UP = 30.0  # seconds after the last webhook's answer for the last event
STEP = 95  # the payloads' step: this scenario's own summaries
SEQUENCE = re.compile(r"delivery ([0-9]+)$")
_SCANS = """
SELECT (SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables
         WHERE relname = 'changes') AS scans,
       (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS xacts
"""


@dataclass
class Run:
    streams: int
    webhook_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    due: dict[int, float] = field(default_factory=dict)
    # stream -> sequence -> arrival
    seen: dict[int, dict[int, float]] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)  # webhooks answered other than applied
    cpu_s: float = 0.0  # serve's CPU time over the load (user + system)
    scans: float = 0.0
    xacts: float = 0.0
    hub_reads: float = 0.0
    rss_mb: float = 0.0
    sent: int = 0


def stream_keys(stream: int, streams: int, issues: int) -> list[str]:
    """The keys of stream `stream`: issue n goes to stream (n - 1) % streams."""
    return [f"{PROJECT}-{n}" for n in range(stream + 1, issues + 1, streams)][:10]


def owner(sequence: int, streams: int, issues: int) -> int:
    return (sequence % issues) % streams


async def follow(
    session: aiohttp.ClientSession, url: str, keys: list[str], seen: dict[int, float]
) -> None:
    """Follow a stream, noting when each entry arrives; a 503 (pool busy) is retried."""
    path = f"{url}/api/v1/changes/stream?keys={','.join(keys)}"
    for _ in range(20):
        async with session.get(path, timeout=aiohttp.ClientTimeout(total=None)) as stream:
            if stream.status == 503:
                await asyncio.sleep(float(stream.headers.get("Retry-After", "1")))
                continue
            if stream.status != 200:
                raise RuntimeError(f"stream refused: {stream.status} {await stream.text()}")
            async for line in stream.content:
                if line.startswith(b"data:"):
                    entry = json.loads(line[5:])
                    match = SEQUENCE.search(entry["issue"]["summary"] or "")
                    if match:
                        seen.setdefault(int(match.group(1)), time.perf_counter())
            return


async def open_streams(
    session: aiohttp.ClientSession, world: World, run: Run
) -> list[asyncio.Task[None]]:
    """Open the streams WAVE at a time, as a fleet of clients would connect, until all joined."""
    url, followers = world.serve.url, []
    for stream in range(run.streams):
        run.seen[stream] = {}
        keys = stream_keys(stream, run.streams, world.plan.issues)
        followers.append(asyncio.create_task(follow(session, url, keys, run.seen[stream])))
        if len(followers) % WAVE and len(followers) < run.streams:
            continue
        deadline = time.monotonic() + 60
        while await metric(session, url, "jsc_change_streams") < len(followers):
            for task in followers:
                if task.done():
                    task.result()
                    raise RuntimeError("a stream ended before the run")
            if time.monotonic() > deadline:
                raise RuntimeError("streams did not all join the hub")
            await asyncio.sleep(0.1)
    return followers


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as reply:
        text = await reply.text()
    return next(
        (float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")), 0.0
    )


async def scans(dsn: str) -> tuple[float, float]:
    """Scans of the change log, and transactions, in the run's database so far."""
    await asyncio.sleep(1.5)  # backends flush their statistics at most once a second
    connection = await db.connect(dsn)
    try:
        (row,) = await connection.fetch(_SCANS)
        return float(row["scans"] or 0), float(row["xacts"] or 0)
    finally:
        await connection.close()


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Any,
    due: float,
    run: Run,
    sequence: int,
) -> None:
    """Send one webhook; one not applied (503: the pool was busy) is not expected on a stream."""
    async with session.post(url, data=body, headers=headers) as reply:
        answer = await reply.read()
    run.webhook_ms.append((time.perf_counter() - due) * 1000)
    if reply.status != 200 or b'"applied"' not in answer:
        run.failed.add(sequence)


async def get(session: aiohttp.ClientSession, url: str, due: float, out: list[float]) -> None:
    async with session.get(url) as reply:
        await reply.read()
    out.append((time.perf_counter() - due) * 1000)


async def load(
    session: aiohttp.ClientSession, world: World, run: Run, first: int, base_ms: int
) -> None:
    """Open loop: webhooks at RATE and GETs at GET_RATE, each at its due time."""
    url = world.serve.url
    bodies = list(signed_bodies(SECRET, STEP, run.sent, world.plan.issues, first, base_ms))
    start = time.perf_counter() + 0.05
    tasks = []
    reads = int(run.sent * GET_RATE / RATE)
    plan = [(index / RATE, "hook", index) for index in range(run.sent)]
    plan += [(index / GET_RATE, "get", index) for index in range(reads)]
    for offset, kind, index in sorted(plan):
        due = start + offset
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if kind == "get":
            key = f"{PROJECT}-{index * 7919 % world.plan.issues + 1}"  # spread, repeatable
            tasks.append(
                asyncio.create_task(get(session, f"{url}/api/v1/issues/{key}", due, run.get_ms))
            )
            continue
        delivery, body, signature = bodies[index]
        run.due[first + index] = due
        headers = {
            "X-Hub-Signature": f"sha256={signature}",
            "X-Atlassian-Webhook-Identifier": delivery,
            "Content-Type": "application/json",
        }
        tasks.append(
            asyncio.create_task(
                post(session, f"{url}{WEBHOOK_PATH}", body, headers, due, run, first + index)
            )
        )
    await asyncio.gather(*tasks)


def expected(run: Run) -> list[int]:
    return [seq for seq in run.due if seq not in run.failed]


async def arrived(run: Run, issues: int) -> None:
    """Until every event came, or GIVE_UP seconds passed since the last webhook's answer."""
    deadline = time.monotonic() + GIVE_UP
    while run.streams and time.monotonic() < deadline:
        if all(seq in run.seen[owner(seq, run.streams, issues)] for seq in expected(run)):
            return
        await asyncio.sleep(0.1)


async def measure(world: World, streams: int, first: int, base_ms: int) -> Run:
    run = Run(streams, sent=int(RATE * world.plan.feed_seconds))
    url = world.serve.url
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        followers = await open_streams(session, world, run)
        before_scans, before_reads = (
            await scans(world.dsn),
            await metric(session, url, "jsc_change_hub_reads_total"),
        )
        cpu = psutil.Process(world.serve.pid)
        cpu_before = sum(cpu.cpu_times()[:2])
        with procs.RssSampler(world.serve.pid, every=0.05) as rss:
            await load(session, world, run, first, base_ms)
            run.cpu_s = sum(cpu.cpu_times()[:2]) - cpu_before
            await arrived(run, world.plan.issues)
        run.rss_mb = rss.peak_mb
        after_scans, after_xacts = await scans(world.dsn)
        run.scans, run.xacts = after_scans - before_scans[0], after_xacts - before_scans[1]
        run.hub_reads = await metric(session, url, "jsc_change_hub_reads_total") - before_reads
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return run


def event_latencies(run: Run, issues: int) -> tuple[list[float], list[float], int]:
    """Every event's latency, each stream's p99, and how many events never came."""
    values, worst, lost = [], [], 0
    for stream, seen in run.seen.items():
        mine = [seq for seq in expected(run) if owner(seq, run.streams, issues) == stream]
        got = [(seen[seq] - run.due[seq]) * 1000 for seq in mine if seq in seen]
        lost += len(mine) - len(got)
        values += got
        if got:
            worst.append(percentile(got, 0.99))
    return values, worst, lost


def report(results: Results, none: Run, many: Run, issues: int) -> None:
    events, per_stream, lost = event_latencies(many, issues)
    p99 = percentile(events, 0.99) if not lost else float("inf")
    section = "8 streams"
    results.add(
        Figure(
            section,
            f"webhook to SSE event, {many.streams} streams, {RATE}/s, p99",
            p99,
            "ms",
            None,
            "",
            target="≤ 100 ms on every stream",
            met=not lost and max(per_stream, default=0) <= 100,
            note=f"p50 {percentile(events, 0.5):.1f} ms; worst stream's p99"
            f" {max(per_stream, default=0):.1f} ms; {len(events)} events, {lost} lost;"
            f" {len(many.failed)} webhooks not applied (no event expected)",
        )
    )
    for name, mine, base in (
        ("webhook", many.webhook_ms, none.webhook_ms),
        ("GET one issue", many.get_ms, none.get_ms),
    ):
        ours, theirs = percentile(mine, 0.99), percentile(base, 0.99)
        results.add(
            Figure(
                section,
                f"{name} p99 with {many.streams} streams open",
                ours,
                "ms",
                theirs,
                "the same run with no streams",
                target="≤ 2x",
                met=ours <= 2 * max(theirs, 1.0),
                note=f"p50 {percentile(mine, 0.5):.1f} vs {percentile(base, 0.5):.1f} ms",
            )
        )
    results.add(
        Figure(
            section,
            f"serve's CPU time over the load, {many.streams} streams open",
            many.cpu_s,
            "s",
            none.cpu_s,
            "the same run with no streams",
            target="",
            note="user + system, while the webhooks and GETs were sent; on a shared machine the"
            " fairer measure of cost than latency",
        )
    )
    results.add(
        Figure(
            section,
            f"peak RSS of serve with {many.streams} streams",
            many.rss_mb,
            "MiB",
            none.rss_mb,
            "the same run with no streams",
            target="≤ 300 MiB",
            met=many.rss_mb <= 300,
            note="",
        )
    )
    per_change = many.scans / many.sent
    results.add(
        Figure(
            section,
            "PostgreSQL scans of the change log per change",
            per_change,
            "",
            none.scans / none.sent,
            "the same run with no streams",
            target="independent of the streams",
            met=per_change <= 2 * none.scans / none.sent + 1,
            note=f"transactions per change {many.xacts / many.sent:.2f} (no streams:"
            f" {none.xacts / none.sent:.2f}); hub reads per change"
            f" {many.hub_reads / many.sent:.2f}",
        )
    )


async def run(world: World, results: Results) -> None:
    base_ms = int(time.time() * 1000) + 3_600_000  # newer than every earlier scenario's
    first = 10_000_000  # delivery sequences of their own
    none = await measure(world, 0, first, base_ms)
    many = await measure(world, world.plan.streams, first + none.sent, base_ms)
    results.raw["streams"] = {
        name: {
            "streams": r.streams,
            "sent": r.sent,
            "webhook_ms": r.webhook_ms,
            "get_ms": r.get_ms,
            "failed": len(r.failed),
            "cpu_s": r.cpu_s,
            "scans": r.scans,
            "xacts": r.xacts,
            "hub_reads": r.hub_reads,
            "rss_mb": r.rss_mb,
        }
        for name, r in (("none", none), ("many", many))
    }
    report(results, none, many, world.plan.issues)
