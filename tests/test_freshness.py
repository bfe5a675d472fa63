"""Freshness end to end: the simulator's webhooks and the poller against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from jira_simulator import Simulator
from service.config import Settings
from service.jira.client import JiraClient, open_session
from service.storage import gauges, tracking
from service.sync.poller import Poller
from service.sync.refresh import Refresher
from tests.live import AGE_BY_A_TTL, jira_settings, serve, wait_until
from tests.pgproxy import PgProxy


@pytest.fixture
async def http(service: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service) as client:
        yield client


async def link_all(http: httpx.AsyncClient, keys: list[str], project: str = "p") -> None:
    for key in keys:
        assert (await http.put(f"/api/v1/projects/{project}/jira/{key}")).status_code == 201


async def cached(http: httpx.AsyncClient, key: str) -> dict:
    return (await http.get(f"/api/v1/issues/{key}")).json()


async def test_transition_reaches_the_cache_by_webhook(sim, http) -> None:
    """A transition in Jira shows in GET through its webhook, with no read from Jira."""
    (key,) = sim.seed(1, ["ALPHA"])
    await cached(http, key)
    sim.reset_counters()
    sim.transition(key, "Done")
    await sim.drain_webhooks()
    issue = await cached(http, key)
    assert issue["status"]["category"] == "done" and issue["source"] == "webhook"
    assert sum(sim.counters.values()) == 0


async def test_reread_of_a_webhook_version_moves_verified_at_not_source(sim, http, db) -> None:
    """After a webhook, re-reads of the same version (a refresh, a poll) keep source webhook
    and move verified_at."""
    (key,) = sim.seed(1, ["ALPHA"])
    await link_all(http, [key])
    sim.transition(key, "Done")
    await sim.drain_webhooks()
    delivered = await cached(http, key)
    refreshed = (await http.post(f"/api/v1/issues/{key}/refresh")).json()
    await db.execute(AGE_BY_A_TTL)
    report = (await http.get("/api/v1/cron/jira-refresh")).json()
    polled = await cached(http, key)
    assert delivered["source"] == refreshed["source"] == polled["source"] == "webhook"
    assert delivered["verified_at"] < refreshed["verified_at"] < polled["verified_at"]
    assert refreshed["jira_updated_at"] == delivered["jira_updated_at"]
    assert (report["unchanged"], report["refreshed"]) == (1, 0)


async def test_wrong_secret_is_refused_and_not_retried(sim, http, db: asyncpg.Pool) -> None:
    """Deliveries signed with another secret are refused with 401, never retried, never stored."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.options.webhook_secret = "not-our-secret"
    sim.edit_summary(key, "forged")
    await sim.drain_webhooks()
    assert [attempt.status for attempt in sim.attempts] == [401]
    assert await db.fetchval("SELECT count(*) FROM issues") == 0
    assert (await http.get("/api/v1/webhooks/dead-letters")).json()["dead_letters"] == []


async def test_duplicate_delivery_writes_once(sim, http, db: asyncpg.Pool) -> None:
    """A duplicated delivery is applied once; the copy answers 200 as a duplicate."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.webhooks.duplicate_next = 1
    sim.edit_summary(key, "once")
    await sim.drain_webhooks()
    assert [attempt.status for attempt in sim.attempts] == [200, 200]
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
    assert (await cached(http, key))["summary"] == "once"


async def test_reordered_deliveries_leave_the_newest(sim, http) -> None:
    """Deliveries that arrive newest first still leave the newest state."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.webhooks.reorder = True
    for n in range(5):
        sim.edit_summary(key, f"edit {n}")
    sim.webhooks.reorder = False
    sim.hooks.release()
    await sim.drain_webhooks()
    assert (await cached(http, key))["summary"] == "edit 4"


async def test_delete_move_and_comment(sim, http, db: asyncpg.Pool) -> None:
    """Delete leaves a tombstone, a move keeps the old key and its link, a comment is harmless."""
    gone, moving, talked = sim.seed(3, ["ALPHA"])
    await link_all(http, [gone, moving, talked])
    await http.post("/api/v1/projects/p/jira/refresh")
    sim.delete(gone)
    new_key = sim.move(moving, "BETA")
    before = await cached(http, talked)
    sim.comment(talked)
    await sim.drain_webhooks()
    links = {
        link["key"]: link for link in (await http.get("/api/v1/projects/p/jira")).json()["links"]
    }
    assert links[gone]["issue"]["state"] == "deleted"
    assert links[moving]["issue"]["key"] == new_key
    assert (await cached(http, moving))["key"] == new_key
    assert (await cached(http, talked))["summary"] == before["summary"]
    assert {attempt.status for attempt in sim.attempts} == {200}
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_database_outage_loses_no_delivery(sim, settings: Settings, db) -> None:
    """PostgreSQL down during deliveries: 503s, Jira's retries land later, nothing is lost."""
    sim.options.webhook_max_tries = 8
    sim.options.webhook_backoff = 0.2
    keys = sim.seed(5, ["ALPHA"])
    proxy = PgProxy(settings.database_url or "")
    dsn = await proxy.start()
    async with serve(jira_settings(settings, sim, database_url=dsn, memo_size=0)) as url:
        sim.options.webhook_url = f"{url}/api/v1/webhooks/jira"
        await proxy.cut()
        for key in keys:
            sim.edit_summary(key, f"during outage {key}")

        async def refused() -> bool:  # each delivery met the outage at least once
            return {a.key for a in sim.attempts if a.status == 503} == set(keys)

        await wait_until(refused, 60)
        await proxy.start()
        await sim.drain_webhooks()
    await proxy.cut()
    statuses = [attempt.status for attempt in sim.attempts]
    assert 503 in statuses
    rows = await db.fetch("SELECT summary FROM issues ORDER BY id")
    assert [row["summary"] for row in rows] == [f"during outage {key}" for key in keys]


async def test_one_poll_heals_dropped_webhooks(sim, http, db) -> None:
    """With every webhook dropped, one cron poll brings each tracked issue to Jira's truth."""
    keys = sim.seed(40, ["ALPHA"])
    await link_all(http, keys)  # each link reads its issue at once
    assert await db.fetchval("SELECT count(*) FROM issues WHERE state = 'ok'") == 40
    sim.webhooks.drop_probability = 1.0
    for key in keys:
        sim.transition(key, "Done")
    await db.execute(AGE_BY_A_TTL)
    report = (await http.get("/api/v1/cron/jira-refresh")).json()
    body = (await http.get("/api/v1/issues", params={"keys": ",".join(keys)})).json()
    assert report["refreshed"] == 40 and report["failed"] == 0
    assert {issue["status"]["category"] for issue in body["issues"]} == {"done"}


def make_poller(pool: asyncpg.Pool, settings: Settings, sim: Simulator, session) -> Poller:
    wired = jira_settings(settings, sim)
    return Poller(pool, Refresher(pool, JiraClient(session, wired.jira), wired.cache_ttl), wired)


async def test_ten_thousand_due_in_at_most_100_bulk_requests(sim, settings, db) -> None:
    """10,000 due issues are read with at most 100 bulk requests, each due again after."""
    keys = sim.seed(10_000, ["ALPHA", "BETA"])
    await tracking.track(db, keys)
    sim.reset_counters()
    async with open_session(jira_settings(settings, sim).jira) as session:
        report = await make_poller(db, settings, sim, session).poll()
    assert report.count("refreshed") == 10_000
    assert sim.counters == {"bulkfetch": 100}
    assert (await gauges.cache_gauges(db, settings.cache_ttl)).due == 0


async def test_two_pollers_read_no_issue_twice(sim, settings, db) -> None:
    """Two pollers at once split the due work: every issue is read exactly once."""
    keys = sim.seed(2_000, ["ALPHA"])
    await tracking.track(db, keys)
    sim.options.latency = 0.02
    sim.reset_counters()
    small = jira_settings(settings, sim, poll_batch_size=200)
    async with open_session(small.jira) as session:
        pollers = [make_poller(db, small, sim, session) for _ in range(2)]
        reports = await asyncio.gather(*(poller.poll() for poller in pollers))
    read = [key for report in reports for key in report.results]
    assert sorted(read) == sorted(keys)
    assert all(report.results for report in reports)
    assert sim.counters["bulkfetch"] == 20


async def test_lease_of_a_killed_run_is_taken_over_after_expiry(sim, settings, db) -> None:
    """Keys leased by a run that died become due when the lease expires, and are read."""
    keys = sim.seed(10, ["ALPHA"])
    await tracking.track(db, keys)
    claimed, _ = await tracking.claim_due(db, "dead-replica", 100, 600, settings.cache_ttl)
    async with open_session(jira_settings(settings, sim).jira) as session:
        poller = make_poller(db, settings, sim, session)
        early = await poller.poll()
        await db.execute(  # the lease runs out: its end is the keys' due time
            "UPDATE tracked SET lease_until = now() - interval '1 second',"
            " next_due_at = now() - interval '1 second'"
        )
        late = await poller.poll()
    assert sorted(claimed) == sorted(keys)
    assert early.results == {} and sorted(late.results) == sorted(keys)


async def test_jira_down_gives_leases_back(sim, settings, db) -> None:
    """When Jira is unavailable, the claimed keys are due again at once: nothing is lost."""
    keys = sim.seed(10, ["ALPHA"])
    await tracking.track(db, keys)
    sim.fail_next(100, status=503)
    async with open_session(jira_settings(settings, sim).jira) as session:
        down = jira_settings(settings, sim, jira_max_retries=0)
        poller = Poller(db, Refresher(db, JiraClient(session, down.jira), 3600), down)
        report = await poller.poll()
    due = (await gauges.cache_gauges(db, settings.cache_ttl)).due
    leased = await db.fetchval("SELECT count(*) FROM tracked WHERE lease_owner IS NOT NULL")
    assert report.results == {} and due == 10 and leased == 0


async def test_refresh_endpoints_report_a_mix(sim, http) -> None:
    """The project refresh reports found, moved, deleted and unknown keys correctly."""
    found, moved, deleted = sim.seed(3, ["ALPHA"])
    await link_all(http, [found, moved, deleted, "NOPE-9"])
    sim.webhooks.drop_probability = 1.0
    sim.move(moved, "BETA")
    sim.delete(deleted)
    sim.transition(found, "Done")
    report = (await http.post("/api/v1/projects/p/jira/refresh")).json()
    assert (report["requested"], report["refreshed"], report["not_found"]) == (4, 2, 2)
    assert (report["failed"], report["errors"]) == (0, [])
    again = (await http.post("/api/v1/projects/p/jira/refresh")).json()
    assert (again["refreshed"], again["unchanged"], again["not_found"]) == (0, 2, 2)
    one = await http.post(f"/api/v1/issues/{found}/refresh")
    assert one.status_code == 200 and one.json()["status"]["category"] == "done"
    unknown = await http.post("/api/v1/issues/NOPE-9/refresh")
    assert unknown.status_code == 404


async def test_concurrent_cron_calls_do_not_double_the_work(sim, http, db) -> None:
    """Two cron calls at once share one cycle: each due key is read once."""
    keys = sim.seed(300, ["ALPHA"])
    await link_all(http, keys)
    await db.execute(AGE_BY_A_TTL)  # the links read them: due again once a TTL passes
    sim.options.latency = 0.05
    sim.reset_counters()
    first, second = await asyncio.gather(
        http.get("/api/v1/cron/jira-refresh"), http.get("/api/v1/cron/jira-refresh")
    )
    assert first.json()["requested"] == 300 and second.json()["requested"] == 300
    assert sim.counters["bulkfetch"] == 3
