"""Freshness you can trust: each way the cache went stale while saying all was well, against
the simulator (minute precision, a killed replica, Jira's clock, index lag, re-read cost)."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest

from service.metrics import Metrics
from service.storage import issues as store
from service.storage import tracking, watermarks
from service.sync.changed_since import MIN_OVERLAP
from service.sync.freshness import FreshnessWatch
from service.sync.leases import lease_for
from tests.live import jira_settings
from tests.test_memo import wait_for
from tests.test_poller import poll_with
from tests.test_sync import cache, jira_statuses, statuses, syncer
from tests.test_tools import run as run_command
from tests.test_tools import wired


def set_jira_clock(sim, into_minute: float) -> None:
    """Jira's clock `into_minute` seconds past the next minute boundary (negative: before)."""
    now = time.time()
    boundary = math.ceil(now / 60) * 60
    sim.options.clock_offset = boundary + into_minute - now


async def test_changes_in_a_minutes_last_second_are_found(sim, settings, db) -> None:
    """Jira comparing `updated` to the minute, with a 5 s interval and 10 s overlap: 5 changes
    made in a minute's last second are found by the next round, 3 s into the next minute."""
    wired = jira_settings(settings, sim, sync_interval=5.0, sync_overlap=10.0)
    keys = sim.seed(5, ["ALPHA"])
    await cache(db, wired, keys)
    sim.options.minute_precision = True
    async with syncer(db, wired) as sync:
        await sync.sync()
        sim.webhooks.drop_probability = 1.0
        set_jira_clock(sim, -0.8)  # the stamps land in :59.2 to :59.9
        for key in keys:
            sim.transition(key)
        assert all(sim.site.get(key).updated.second == 59 for key in keys)
        set_jira_clock(sim, 3.0)
        report = await sync.sync()
    assert report.changes == 5
    assert await statuses(db) == jira_statuses(sim, keys)


async def test_a_dead_replicas_sync_projects_are_taken_over(sim, settings, db, caplog) -> None:
    """Projects leased by a replica killed mid-round are synced by another within its short
    lease (one interval), and the takeover is logged with the dead owner's name."""
    wired = jira_settings(settings, sim, sync_interval=2.0)
    keys = sim.seed(10, ["ALPHA", "BETA"])
    await cache(db, wired, keys)
    async with syncer(db, wired) as live:
        await live.sync()
        sim.webhooks.drop_probability = 1.0
        await watermarks.claim(db, "dead-replica", live.lease, 50)  # then it was killed
        for key in keys:
            sim.transition(key)
        blocked = await live.sync()

        async def healed() -> bool:
            return bool((await live.sync()).synced)

        with caplog.at_level(logging.WARNING, logger="service"):
            assert await wait_for(healed, 30.0)
    assert blocked.synced == [] and live.lease == 2.0
    assert await statuses(db) == jira_statuses(sim, keys)
    taken = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert taken and "dead-replica" in taken[0] and "ALPHA" in taken[0]


async def test_a_dead_replicas_poll_claims_are_taken_over(sim, settings, db, caplog) -> None:
    """Keys claimed by a replica killed mid-poll are read by another within its short lease,
    and the takeover is logged."""
    wired = jira_settings(settings, sim, poll_interval=2.0)
    keys = sim.seed(5, ["ALPHA"])
    await cache(db, wired, keys)
    await db.execute("UPDATE issues SET fetched_at = now() - interval '1 hour'")
    await tracking.make_due(db, keys)
    lease = lease_for(wired.poll_interval, wired.lease_seconds)
    claimed, _ = await tracking.claim_due(db, "dead-replica", 100, lease, wired.cache_ttl)
    sim.webhooks.drop_probability = 1.0
    for key in keys:
        sim.transition(key)

    async def healed() -> bool:
        return bool((await poll_with(db, wired)).results)

    with caplog.at_level(logging.WARNING, logger="service"):
        assert await wait_for(healed, 30.0)
    assert sorted(claimed) == sorted(keys) and lease == 2.0
    assert await statuses(db) == jira_statuses(sim, keys)
    assert any("dead-replica" in r.getMessage() for r in caplog.records)


async def test_jira_clock_90s_behind_hides_no_change(sim, settings, db) -> None:
    """Jira's clock 90 s behind ours (overlap 60 s): the next round finds all 300 changes;
    the skew shows in /metrics and in the freshness verdict, which names it."""
    wired = jira_settings(settings, sim, sync_interval=60.0, sync_overlap=60.0)
    sim.options.clock_offset = -90.0
    keys = sim.seed(300, ["ALPHA"])
    await cache(db, wired, keys)
    async with syncer(db, wired) as sync:
        await sync.sync()
        sim.webhooks.drop_probability = 1.0
        for key in keys:
            sim.transition(key)
        report = await sync.sync()
    assert report.changes == 300
    assert await statuses(db) == jira_statuses(sim, keys)
    verdict = await FreshnessWatch(wired).evaluate(db, None)
    metrics = Metrics()
    await metrics.sample(db, wired.cache_ttl)
    text = generate_latest(metrics.registry).decode()
    assert -92.0 < verdict.as_json()["jira_clock_skew_seconds"] < -88.0  # type: ignore[operator]
    assert verdict.state == "skewed" and "90" in verdict.problems["skewed"]
    shown = re.search(r"^jsc_jira_clock_skew_seconds (\S+)$", text, re.MULTILINE)
    assert shown is not None and -92.0 < float(shown[1]) < -88.0, text


async def test_index_lag_is_estimated_and_said_near_the_overlap(sim, settings, db) -> None:
    """A webhook-delivered change a search missed and a later one found gives the index lag;
    the freshness verdict says `lagging` once it nears JIRA_SYNC_OVERLAP."""
    wired = jira_settings(settings, sim, sync_interval=60.0, sync_overlap=2.0)
    (key,) = sim.seed(1, ["ALPHA"])
    await cache(db, wired, [key])
    async with syncer(db, wired) as sync:
        await sync.sync()
        sim.options.search_lag = 3600.0
        sim.transition(key)
        changed = sim.site.get(key).updated
        delivered = await sync.client.read_issue(key)  # what the webhook brought
        assert delivered is not None
        await store.upsert_issues(db, [delivered], "webhook")

        async def later() -> bool:
            return sim.site.clock() > changed + timedelta(seconds=1.5)

        assert await wait_for(later, 10.0)
        missed = await sync.sync()
        sim.options.search_lag = 0.0  # the index caught up
        await sync.sync()
    clock = await watermarks.jira_clock(db)
    verdict = await FreshnessWatch(wired).evaluate(db, None)
    assert missed.synced == ["ALPHA"] and clock.index_lag >= 1.5
    assert verdict.state == "lagging" and verdict.as_json()["index_lag_seconds"] >= 1.5  # type: ignore[operator]


async def test_rounds_reread_only_what_can_still_be_missing(sim, settings, db) -> None:
    """With webhooks arriving and no index lag seen, a round after 300 changes reads one page
    for 10 new changes, not the 60 s overlap's four."""
    wired = jira_settings(settings, sim, sync_overlap=60.0)
    keys = sim.seed(310, ["ALPHA"])
    await cache(db, wired, keys)
    await db.execute(
        "INSERT INTO webhook_deliveries (id, event) VALUES ('d-1', 'jira:issue_updated')"
    )
    async with syncer(db, wired) as sync:
        await sync.sync()
        for key in keys[:300]:
            sim.transition(key)
        last = sim.site.get(keys[299]).updated

        async def settled() -> bool:  # past the overlap the lag allows
            return datetime.now(UTC) > last + timedelta(seconds=MIN_OVERLAP + 0.5)

        assert await wait_for(settled, 20.0)
        busy = await sync.sync()
        for key in keys[300:]:
            sim.transition(key)
        report = await sync.sync()
    assert busy.changes == 300 and busy.overlap == MIN_OVERLAP
    assert report.changes == 10 and report.pages == 1
    assert await statuses(db) == jira_statuses(sim, keys)


async def test_freshness_says_stalled_and_logs_each_change(sim, settings, db, caplog) -> None:
    """No successful round for 3 intervals is `stalled` in /healthz's freshness and in words;
    one line is logged when it turns, one when it is fresh again."""
    wired = jira_settings(settings, sim, sync_interval=10.0)
    keys = sim.seed(2, ["ALPHA"])
    await cache(db, wired, keys)
    watch = FreshnessWatch(wired)
    async with syncer(db, wired) as sync:
        await sync.sync()
        fresh = await watch.evaluate(db, None)
        await db.execute("UPDATE sync_projects SET verified_at = now() - interval '5 minutes'")
        with caplog.at_level(logging.INFO, logger="service.sync.freshness"):
            stalled = await watch.evaluate(db, None)
            again = await watch.evaluate(db, None)
            await sync.sync()
            healed = await watch.evaluate(db, None)
    assert fresh.state == "ok" and stalled.state == "stalled" and again.state == "stalled"
    assert stalled.as_json()["stalled_projects"] == ["ALPHA"]
    assert "no successful sync round for 3 intervals" in stalled.lines()[0]
    assert healed.state == "ok"
    turns = [r.getMessage() for r in caplog.records if r.name == "service.sync.freshness"]
    assert len(turns) == 2 and turns[0].startswith("freshness stalled")


async def test_a_poll_batch_slower_than_its_lease_keeps_it(sim, settings, db) -> None:
    """A batch Jira answers more slowly than the lease lasts keeps its keys: the lease is
    renewed while the read goes on, so no other replica reads them twice."""
    wired = jira_settings(settings, sim, poll_interval=1.0)
    keys = sim.seed(3, ["ALPHA"])
    await tracking.track(db, keys)
    sim.options.latency = 8.0  # well past the 2 s lease
    polling = asyncio.create_task(poll_with(db, wired))

    async def leased() -> bool:
        held = await db.fetchval("SELECT count(*) FROM tracked WHERE lease_owner IS NOT NULL")
        return bool(held == len(keys))

    try:
        assert await wait_for(leased, 10.0)
        first = await db.fetchval("SELECT max(lease_until) FROM tracked")

        async def outlived() -> bool:  # the first lease ran out, and the keys are still held
            return bool(
                await db.fetchval(
                    "SELECT now() > $1 AND bool_and(lease_until > now()) FROM tracked", first
                )
            )

        assert await wait_for(outlived, 10.0)
        lease = lease_for(wired.poll_interval, wired.lease_seconds)
        stolen, _ = await tracking.claim_due(db, "other-replica", 100, lease, wired.cache_ttl)
    finally:
        sim.options.latency = 0.0
        report = await polling
    assert stolen == [] and sorted(report.results) == sorted(keys)


async def test_check_warns_of_a_skewed_jira_clock(sim, db, database_url) -> None:
    """`check` measures Jira's clock: 90 s behind, past the 60 s overlap, is a warning in
    words on its freshness line."""
    sim.options.clock_offset = -90.0
    checked = await run_command("check", **wired(database_url, sim, JIRA_SYNC_OVERLAP="60"))
    line = checked.line("freshness")
    assert line.split()[1] == "ok", checked.out
    assert "skewed: Jira's clock is 90" in line and "behind ours" in line
