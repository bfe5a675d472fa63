"""The changed-since sync against the simulator and a real PostgreSQL, rounds called directly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from prometheus_client import generate_latest

from jira_simulator import Simulator
from service.config import Settings
from service.jira.client import JiraClient, open_session
from service.jira.search import ChangeSearch
from service.metrics import Metrics
from service.shapes import shape_issue
from service.storage import issues as store
from service.storage import links, tracking, watermarks
from service.sync.changed_since import Syncer
from service.sync.health import WebhookHealth
from service.sync.verified import Verified
from service.sync.wiring import jira_parts
from tests.conftest import app_client
from tests.live import jira_settings, sim_options
from tests.test_memo import wait_for
from tests.test_poller import poll_with
from tests.test_tools import run as run_command
from tests.test_tools import wired

PROJECTS = [f"P{n:02d}" for n in range(1, 21)]


@contextlib.asynccontextmanager
async def syncer(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Syncer]:
    async with jira_parts(settings, pool) as parts:
        assert parts.client is not None
        yield Syncer(pool, parts.client, settings)


async def cache(pool: asyncpg.Pool, settings: Settings, keys: list[str]) -> None:
    """Read the keys into the cache and track them, as a first GET would."""
    async with jira_parts(settings, pool) as parts:
        assert parts.refresher is not None
        await parts.refresher.refresh(keys, "refresh")
    await tracking.track(pool, keys)


async def statuses(pool: asyncpg.Pool) -> dict[str, str]:
    return dict(await pool.fetch("SELECT key, status_name FROM issues"))


def jira_statuses(sim: Simulator, keys: list[str]) -> dict[str, str]:
    return {key: sim.site.get(key).status.name for key in keys}


async def test_changes_without_webhooks_are_visible_after_one_round(sim, settings, db) -> None:
    """With every webhook lost, 200 changes over 20 projects are in the cache after one round."""
    wired = jira_settings(settings, sim)
    keys = sim.seed(400, PROJECTS)
    await cache(db, wired, keys)
    async with syncer(db, wired) as sync:
        await sync.sync()
        sim.webhooks.drop_probability = 1.0
        changed = keys[:200]
        for key in changed:
            sim.transition(key)
        sim.reset_counters()
        report = await sync.sync()
    assert report.changes == 200 and sorted(report.synced) == PROJECTS
    assert await statuses(db) == jira_statuses(sim, keys)
    assert set(sim.counters) == {"search_jql", "server_info"}  # and Jira's clock, once
    sources = dict(await db.fetch("SELECT key, source FROM issues WHERE key = ANY($1)", changed))
    assert set(sources.values()) == {"sync"}


async def test_unknown_project_is_dropped_and_recorded(sim, settings, db, caplog) -> None:
    """A project Jira does not know is dropped with its reason, logged once, a warning not a
    failure; the others sync."""
    wired = jira_settings(settings, sim)
    keys = sim.seed(4, ["ALPHA", "BETA"])
    await cache(db, wired, keys)
    await tracking.track(db, ["GONE-1"])
    async with syncer(db, wired) as sync:
        with caplog.at_level(logging.WARNING, logger="service"):
            first = await sync.sync()
            sim.transition(keys[0])
            report = await sync.sync()
    marks = {mark.project: mark for mark in await watermarks.watermarks(db)}
    assert list(first.unknown) == ["GONE"] and not first.failed
    assert sorted(report.synced) == ["ALPHA", "BETA"] and "GONE" not in report.done  # for now
    assert marks["GONE"].unknown_to_jira
    assert "does not exist for the field 'project'" in (marks["GONE"].error or "")
    assert marks["GONE"].verified_at is None and marks["ALPHA"].verified_at is not None
    assert len([r for r in caplog.records if "GONE" in r.getMessage()]) == 1
    assert (await statuses(db))[keys[0]] == sim.site.get(keys[0]).status.name


async def test_change_hidden_by_a_lagging_index_is_found_next_round(sim, settings, db) -> None:
    """A change the search index does not show yet is found by a later round's overlap."""
    wired = jira_settings(settings, sim)
    (key,) = sim.seed(1, ["ALPHA"])
    await cache(db, wired, [key])
    async with syncer(db, wired) as sync:
        await sync.sync()
        sim.options.search_lag = 3600.0
        sim.transition(key)
        missed = await sync.sync()
        sim.options.search_lag = 0.0  # the index has caught up
        found = await sync.sync()
    assert missed.changes == 0 and found.changes == 1
    assert (await statuses(db))[key] == sim.site.get(key).status.name


async def test_data_center_search_follows_every_page(settings, db) -> None:
    """On Data Center the search pages with startAt until Jira's total is read."""
    async with Simulator(sim_options(flavor="dc", pat="jira-token-for-tests")) as sim:
        wired = jira_settings(settings, sim)
        keys = sim.seed(250, ["ALPHA"])
        await cache(db, wired, keys)
        async with syncer(db, wired) as sync:
            await sync.sync()
            for key in keys:
                sim.transition(key)
            report = await sync.sync()
        assert report.changes == 250 and report.pages == 3
        assert await statuses(db) == jira_statuses(sim, keys)


async def test_issue_changed_between_pages_hides_no_other(sim, settings, db) -> None:
    """An issue changed while a search pages through its window pushes no other issue out."""
    wired = jira_settings(settings, sim)
    keys = sim.seed(150, ["ALPHA"])
    for key in keys:
        sim.transition(key)
    found: list[str] = []
    async with syncer(db, wired) as sync:
        async for page in ChangeSearch(sync.client, ["ALPHA"], 60).issues():
            found += [issue.key for issue in page]
            if len(found) == 100:
                sim.transition(found[10])  # read already: it moves to the newest end
    assert set(keys) <= set(found)


async def test_round_reads_only_the_pages_its_window_needs(sim, settings, db) -> None:
    """A round after a busy one reads the few new changes, not the whole minute JQL names."""
    wired = dataclasses.replace(jira_settings(settings, sim), sync_overlap=0.0)
    keys = sim.seed(300, ["ALPHA"])
    await cache(db, wired, keys)
    async with syncer(db, wired) as sync:
        await sync.sync()
        for key in keys[:250]:
            sim.transition(key)
        last = sim.site.get(keys[249]).updated

        async def clock_passed() -> bool:
            # The simulator stamps each write 1 ms after the last: 250 run ahead of the clock.
            # A second more: the next window starts that much before its watermark at most
            # (the measured clock's doubt), and should hold none of these.
            return datetime.now(UTC) > last + timedelta(seconds=1)

        assert await wait_for(clock_passed)
        await sync.sync()
        for key in keys[250:]:
            sim.transition(key)
        report = await sync.sync()
    assert report.changes == 50 and report.pages == 1
    assert await statuses(db) == jira_statuses(sim, keys)


async def test_two_replicas_sync_disjoint_projects(sim, settings, db) -> None:
    """Two runners on one database split the projects; none is synced by both."""
    sim.options.latency = 0.02
    wired = jira_settings(settings, sim)
    keys = sim.seed(40, PROJECTS)
    await tracking.track(db, keys)
    async with syncer(db, wired) as one, syncer(db, wired) as two:
        one.batch = two.batch = 2
        first, second = await asyncio.gather(one.sync(every=60), two.sync(every=60))
    assert not set(first.synced) & set(second.synced)
    assert sorted(first.synced + second.synced) == PROJECTS
    assert first.synced and second.synced


async def test_round_killed_midway_is_covered_again(sim, settings, db) -> None:
    """A round cut off after its first page moves no watermark; the next one reads it all."""
    wired = jira_settings(settings, sim)
    keys = sim.seed(250, ["ALPHA"])
    await cache(db, wired, keys)
    async with syncer(db, wired) as sync:
        await sync.sync()
        before = {mark.project: mark.verified_at for mark in await watermarks.watermarks(db)}
        for key in keys:
            sim.transition(key)
        sim.options.latency = 0.3
        cut = asyncio.create_task(sync.sync())

        async def first_page_stored() -> bool:
            return await db.fetchval("SELECT count(*) FROM issues WHERE source = 'sync'") >= 100

        assert await wait_for(first_page_stored)
        cut.cancel()  # the first page is stored, the second is on its way
        with pytest.raises(asyncio.CancelledError):
            await cut
        sim.options.latency = 0.0
        marks = await watermarks.watermarks(db)
        assert {m.project: m.verified_at for m in marks} == before
        assert marks[0].lease_owner is None
        report = await sync.sync()
    assert report.changes == 150 and report.pages == 3
    assert await statuses(db) == jira_statuses(sim, keys)


async def test_synced_issue_is_served_fresh_and_not_polled(sim, settings, db) -> None:
    """An issue read long ago, its project synced since, is served fresh and not polled."""
    wired = jira_settings(settings, sim, cache_ttl=600.0)
    keys = sim.seed(3, ["ALPHA"])
    await cache(db, wired, keys)
    async with syncer(db, wired) as sync:
        await sync.sync()
    await db.execute("UPDATE issues SET fetched_at = now() - interval '1 hour'")
    await db.execute("UPDATE sync_projects SET covered_since = now() - interval '2 hours'")
    await tracking.make_due(db, keys)
    verified = Verified(wired.sync_recheck)
    await verified.load(db)
    cached = await store.select_by_key(db, keys[0])
    assert cached is not None
    served = shape_issue(cached, 600.0, datetime.now(UTC), verified.at(cached))
    assert served.stale is False and served.age_seconds < 120
    sim.reset_counters()
    await poll_with(db, wired)
    assert sim.counters == {}
    due = await db.fetchval("SELECT min(next_due_at) - now() FROM tracked")
    assert timedelta(minutes=8) < due < timedelta(minutes=11)


async def test_stale_verification_is_polled(sim, settings, db) -> None:
    """An issue whose last verification is older than the TTL is stale and gets polled."""
    wired = jira_settings(settings, sim, cache_ttl=600.0)
    keys = sim.seed(2, ["ALPHA"])
    await cache(db, wired, keys)
    async with syncer(db, wired) as sync:
        await sync.sync()
    await db.execute("UPDATE sync_projects SET verified_at = now() - interval '1 hour'")
    await db.execute("UPDATE issues SET fetched_at = now() - interval '1 hour'")
    await tracking.make_due(db, keys)
    sim.reset_counters()
    report = await poll_with(db, wired)
    assert sorted(report.results) == sorted(keys) and sim.counters


@pytest.fixture
async def http(service: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service) as client:
        yield client


async def test_health_turns_missing_and_back(sim, settings, db, http, caplog) -> None:
    """Changes found only by sync turn webhooks `missing`; a delivered change makes them ok."""
    wired = jira_settings(settings, sim, webhook_grace=0.0)
    keys = sim.seed(2, ["ALPHA"])
    for key in keys:
        assert (await http.get(f"/api/v1/issues/{key}")).status_code == 200
    health = WebhookHealth(True, wired.webhook_grace)
    async with syncer(db, wired) as sync:
        await sync.sync()
        sim.transition(keys[1])  # delivered: the webhook works, until...
        sim.webhooks.drop_probability = 1.0
        sim.transition(keys[0])
        await sim.drain_webhooks()
        await sync.sync()
        with caplog.at_level(logging.INFO, logger="service"):
            missing = await health.evaluate(db)
            sim.webhooks.drop_probability = 0.0
            sim.transition(keys[1])
            await sim.drain_webhooks()
            healed = await health.evaluate(db)
    assert missing.state == "missing" and missing.missing_projects == ("ALPHA",)
    assert healed.state == "ok" and healed.changes == {"sync": 1, "webhook": 1}
    assert healed.webhook_share == 0.5 and healed.last_delivery is not None
    lines = [r.getMessage() for r in caplog.records if "webhooks" in r.getMessage()]
    assert len(lines) == 2


async def test_healthz_reports_webhooks_unconfigured(settings, db) -> None:
    """Without JIRA_WEBHOOK_SECRET /healthz says the webhooks are unconfigured."""
    async with app_client(settings) as http:
        body = (await http.get("/healthz")).json()
    assert body["webhooks"]["state"] == "unconfigured"


async def test_simulated_search_lags_and_refuses_unknown_projects(sim, settings) -> None:
    """The simulator's search misses writes younger than its lag, and 400s unknown projects."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.options.search_lag = 3600.0
    sim.transition(key)
    wired = jira_settings(settings, sim).jira
    assert wired is not None
    async with open_session(wired) as session:
        client = JiraClient(session, wired)
        recent = {"jql": "project = ALPHA AND updated >= -5m", "fields": ["status"]}
        lagging = await client.call("POST", "/search/jql", recent)
        sim.options.search_lag = 0.0
        caught_up = await client.call("POST", "/search/jql", recent)
        unknown = {"jql": 'project in ("ALPHA", "NOPE")'}
        refused = await client.call("POST", "/search/jql", unknown, accept=(400,))
    assert lagging[1]["issues"] == [] and len(caught_up[1]["issues"]) == 1
    assert refused == (
        400,
        {
            "errorMessages": ["The value 'NOPE' does not exist for the field 'project'."],
            "errors": {},
        },
    )


async def test_sync_once_and_check_warn_of_a_mistyped_project(sim, db, database_url) -> None:
    """A project Jira does not know is a warning naming its keys and who linked them: `sync
    --once` and `check` say so and still pass; unlinking the key untracks it at once."""
    keys = sim.seed(4, ["ALPHA", "BETA"])
    await tracking.track(db, keys)
    await links.link(db, "checkout", "ALHPA-1")
    await db.execute("INSERT INTO missing_keys (key) VALUES ('ALHPA-1')")  # Jira said 404
    synced = await run_command("sync", "--once", **wired(database_url, sim))
    checked = await run_command("check", **wired(database_url, sim))
    assert synced.code == 0, synced.out + synced.err
    assert "3/3 projects" in synced.out and "2 projects synced" in synced.out
    assert "warning: Jira does not know project(s) ALHPA" in synced.out
    assert "ALHPA-1 (linked by checkout)" in synced.out
    line = checked.line("sync")
    assert line.split()[1] == "ok" and "ALHPA-1 (linked by checkout)" in line, checked.out
    assert await links.unlink(db, "checkout", "ALHPA-1")
    assert "ALHPA-1" not in await tracking.tracked_keys(db)


async def test_untrack_stops_tracking_keys_only_read(sim, db, database_url) -> None:
    """`untrack KEY...` drops keys tracked only because they were read; a linked key stays,
    named with its project, and the command exits 1."""
    await tracking.track(db, ["ALPHA-1", "ALPHA-2"])
    await links.link(db, "checkout", "ALPHA-2")
    result = await run_command("untrack", "alpha-1", "ALPHA-2", **wired(database_url, sim))
    assert result.code == 1, result.out + result.err
    assert "untracked: ALPHA-1" in result.out and "ALPHA-2: still linked by checkout" in result.out
    assert await tracking.tracked_keys(db) == ["ALPHA-2"]


async def test_metrics_report_rounds_changes_pages_and_lag(sim, settings, db) -> None:
    """/metrics counts sync rounds, changes, pages, and each project's watermark lag."""
    wired = jira_settings(settings, sim)
    keys = sim.seed(3, ["ALPHA"])
    await cache(db, wired, keys)
    metrics = Metrics()
    metrics.watch_health(WebhookHealth(True, 0.0))
    async with jira_parts(wired, db, metrics) as parts:
        assert parts.client is not None
        sync = Syncer(db, parts.client, wired, metrics)
        await sync.sync()
        sim.transition(keys[0])
        await sync.sync()
    await metrics.sample(db, wired.cache_ttl)
    text = generate_latest(metrics.registry).decode()
    assert 'jsc_sync_rounds_total{result="ok"} 2.0' in text
    assert "jsc_sync_changes_total 1.0" in text and "jsc_sync_pages_total 2.0" in text
    assert 'jsc_sync_watermark_lag_seconds{project="ALPHA"}' in text
    assert 'jsc_webhooks_state{state="unknown"} 1.0' in text
