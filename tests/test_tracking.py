"""The tracked set: what is linked or read is polled, due times follow the TTL, unread keys go."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.metrics import Metrics
from service.storage import issues as store
from service.storage import links, tracking
from service.storage.pool import DatabaseUnavailableError, open_pool
from service.sync.readlog import RECORD_EVERY_SECONDS, ReadLog
from service.sync.schedule import forget_job
from service.sync.wiring import jira_parts
from tests.factory import make_issue
from tests.live import jira_settings, serve

WEEK = 7 * 86400.0


async def poll_with(pool: asyncpg.Pool, settings: Settings, reads: list[str] | None = None):
    async with jira_parts(settings, pool) as parts:
        assert parts.refresher is not None and parts.poller is not None
        parts.refresher.reads.note(reads or [])
        return await parts.poller.poll()


async def tracked(db: asyncpg.Pool) -> set[str]:
    return set(await tracking.tracked_keys(db))


async def test_a_shorter_ttl_after_a_restart_makes_stale_keys_due(sim, settings, db) -> None:
    """Restarted with a shorter TTL, issues older than it are polled at once, not a TTL later."""
    keys = sim.seed(5, ["ALPHA"])
    await tracking.track(db, keys)
    hour = jira_settings(settings, sim, cache_ttl=3600.0)
    assert (await poll_with(db, hour)).count("refreshed") == 5
    await db.execute("UPDATE issues SET fetched_at = now() - interval '40 minutes'")
    again = await poll_with(db, hour)
    half_hour = await poll_with(db, jira_settings(settings, sim, cache_ttl=1800.0))
    assert again.results == {}
    assert sorted(half_hour.results) == sorted(keys)


async def test_a_stale_key_is_always_due(sim, settings, db) -> None:
    """Next due times are spread only earlier than the TTL: stale is never before due."""
    keys = sim.seed(200, ["ALPHA"])
    await tracking.track(db, keys)
    await poll_with(db, jira_settings(settings, sim, cache_ttl=1000.0))
    late = await db.fetchval(
        "SELECT count(*) FROM tracked t JOIN issues i ON i.key = t.key"
        " WHERE t.next_due_at > i.fetched_at + interval '1000 seconds'"
    )
    assert late == 0


async def test_a_key_written_since_it_was_scheduled_is_deferred_without_jira(
    sim, settings, db
) -> None:
    """A due key whose issue a webhook just wrote is moved a TTL on and not read from Jira."""
    (key,) = sim.seed(1, ["ALPHA"])
    await store.upsert_issues(db, [make_issue(id=1, key=key)], "webhook")
    await tracking.track(db, [key])
    sim.reset_counters()
    report = await poll_with(db, jira_settings(settings, sim))
    later = await db.fetchval("SELECT next_due_at > now() + interval '47 minutes' FROM tracked")
    assert report.results == {} and sum(sim.counters.values()) == 0 and later


async def test_unread_keys_are_forgotten_and_linked_ones_kept(sim, settings, db) -> None:
    """Keys neither linked nor read for TRACK_READS_FOR stop being tracked; linked ones stay."""
    await links.link(db, "p", "ALPHA-1")
    await tracking.track(db, ["ALPHA-2", "ALPHA-3"])
    await db.execute("UPDATE tracked SET read_at = now() - interval '8 days'")
    wired = jira_settings(settings, sim)
    async with jira_parts(wired, db) as parts:
        assert parts.refresher is not None and parts.poller is not None
        parts.refresher.reads.note(["ALPHA-3"])  # read from the memo, not yet recorded
        await forget_job(parts.poller, WEEK)
    assert await tracked(db) == {"ALPHA-1", "ALPHA-3"}


async def test_reading_an_unlinked_cached_key_tracks_it_again(sim, settings, db) -> None:
    """Unlinked and forgotten, a key read from the cache is tracked again and polled."""
    (key,) = sim.seed(1, ["ALPHA"])
    async with serve(jira_settings(settings, sim)) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.put(f"/api/v1/projects/p/jira/{key}")).status_code == 201
        assert (await http.get(f"/api/v1/issues/{key}")).status_code == 200
        assert (await http.delete(f"/api/v1/projects/p/jira/{key}")).status_code == 204
        assert await tracking.forget_unread(db, 0) == 1  # as after TRACK_READS_FOR
        assert (await http.get(f"/api/v1/issues/{key}")).json()["key"] == key
        await http.get("/api/v1/cron/jira-refresh")
    assert await tracked(db) == {key}


async def test_concurrent_links_and_unlinks_leave_every_linked_key_tracked(
    db, database_url: str
) -> None:
    """Linking in one project while unlinking in another (and forgetting) leaves none untracked."""
    keys = [f"RACE-{n}" for n in range(500)]
    await db.executemany(
        "INSERT INTO links (project_id, key) VALUES ('a', $1)", [(k,) for k in keys]
    )
    await tracking.touch(db, keys)
    await db.execute("UPDATE tracked SET read_at = now() - interval '8 days'")
    wide = await open_pool(database_url, 0, 40)

    async def forget_repeatedly() -> None:
        for _ in range(20):
            await tracking.forget_unread(wide, WEEK)

    try:
        await asyncio.gather(
            *(
                step
                for key in keys
                for step in (links.link(wide, "b", key), links.unlink(wide, "a", key))
            ),
            forget_repeatedly(),
        )
    finally:
        await wide.close()
    linked = {row["key"] for row in await db.fetch("SELECT key FROM links")}
    assert linked == set(keys) and linked <= await tracked(db)


async def test_a_key_read_often_is_recorded_once_per_interval(db) -> None:
    """Hot reads are recorded at most once per RECORD_EVERY_SECONDS, not per read."""
    now = [0.0]
    log = ReadLog(clock=lambda: now[0])
    log.note(["A-1", "A-1", "A-2"])
    log.note(["A-1"])
    first = await log.flush(db)
    log.note(["A-1", "A-2"])  # within the interval: already recorded
    again = await log.flush(db)
    now[0] = RECORD_EVERY_SECONDS
    log.note(["A-1"])
    later = await log.flush(db)
    assert (first, again, later) == (2, 0, 1) and await tracked(db) == {"A-1", "A-2"}


async def test_metrics_query_postgresql_at_most_once_per_snapshot(db) -> None:
    """Scrapes within the snapshot interval share one reading of the tracked-set gauges."""
    now = [0.0]
    metrics = Metrics(clock=lambda: now[0])
    await tracking.track(db, ["A-1"])
    await asyncio.gather(*(metrics.sample(db, 3600) for _ in range(10)))
    await tracking.track(db, ["A-2"])
    await metrics.sample(db, 3600)
    cached = metrics.registry.get_sample_value("jsc_tracked_issues")
    now[0] = 10.0
    await metrics.sample(db, 3600)
    assert (cached, metrics.registry.get_sample_value("jsc_tracked_issues")) == (1, 2)


async def test_a_pool_wait_is_bounded(database_url: str) -> None:
    """With every connection taken, a query waits DB_ACQUIRE_TIMEOUT, then fails as unavailable."""
    pool = await open_pool(database_url, 0, 1, acquire_timeout=0.2)
    try:
        async with pool.acquire():
            with pytest.raises(DatabaseUnavailableError, match="TimeoutError"):
                await pool.fetchval("SELECT 1")
    finally:
        await pool.close()
