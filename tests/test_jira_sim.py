"""The Jira client and read-through against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import httpx
import pytest

from jira_simulator import Simulator
from service.config import Settings
from service.jira.client import JiraClient
from service.storage import issues as store
from service.storage import tracking
from service.sync.wiring import jira_parts
from tests.live import jira_settings, serve, sim_options, wait_until


@pytest.fixture
async def client_for(settings: Settings, pool: asyncpg.Pool):
    """Build a JiraClient for a simulator with the app's factory; closed at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def build(sim: Simulator, **changes: object) -> JiraClient:
            wired = jira_settings(settings, sim, **changes)
            parts = await stack.enter_async_context(jira_parts(wired, pool))
            assert parts.client is not None
            return parts.client

        yield build


async def stored(db: asyncpg.Pool, key: str) -> bool:
    return await store.select_by_key(db, key) is not None


def bulk_requests(sim: Simulator) -> int:
    return sum(n for name, n in sim.counters.items() if "bulk" in name or "search" in name)


async def test_thousand_issues_in_at_most_ten_bulk_requests(sim, client_for) -> None:
    """1,000 keys are read with at most 10 bulk requests and nothing else."""
    keys = sim.seed(1000, ["ALPHA", "BETA"])
    sim.reset_counters()
    reading = await (await client_for(sim)).read_issues(keys)
    assert len(reading.issues) == 1000 and reading.not_found == []
    assert bulk_requests(sim) <= 10
    assert sum(sim.counters.values()) == bulk_requests(sim)


@pytest.mark.parametrize("flavor", ["cloud", "dc"])
async def test_unknown_keys_cost_a_bounded_number_of_requests(client_for, flavor) -> None:
    """1,000 keys Jira does not know, among 100 it knows: 20 requests at most, no GET each."""
    options = sim_options(flavor=flavor, pat="pat-token", email=None, token=None)
    async with Simulator(options if flavor == "dc" else sim_options()) as sim:
        known = sim.seed(100, ["ALPHA"])
        unknown = [f"NOPE-{n}" for n in range(1, 1001)]
        client = await client_for(sim, jira_flavor=flavor, jira_pat="pat-token")
        reading = await client.read_issues([*unknown, *known])
        assert sorted(reading.not_found) == sorted(unknown)
        assert len(reading.issues) == 100
        assert sum(sim.counters.values()) <= 22 and "issue" not in sim.counters


async def test_429_storm_is_waited_out_politely(client_for) -> None:
    """Under a 429 storm no request goes out before Retry-After, and all issues arrive."""
    async with Simulator(sim_options(retry_after=0.3)) as sim:
        keys = sim.seed(300, ["ALPHA"])
        sim.storm(0.5)
        reading = await (await client_for(sim, jira_max_retries=6)).read_issues(keys)
        assert len(reading.issues) == 300
        assert sim.early_requests() == []
        assert any(record.status == 429 for record in sim.requests)


async def test_429_without_retry_after_backs_off_and_recovers(client_for) -> None:
    """Without Retry-After the client backs off on its own and still reads everything."""
    async with Simulator(sim_options(omit_retry_after=True)) as sim:
        keys = sim.seed(150, ["ALPHA"])
        sim.storm(0.3)
        reading = await (await client_for(sim, jira_max_retries=8)).read_issues(keys)
        assert len(reading.issues) == 150


async def test_data_center_drops_unknown_keys_and_reads_the_rest(client_for) -> None:
    """On Data Center an unknown key fails the search; the client drops it and reads the rest."""
    async with Simulator(sim_options(flavor="dc", pat="pat-token", email=None, token=None)) as sim:
        keys = sim.seed(20, ["ALPHA"])
        client = await client_for(sim, jira_flavor="dc", jira_pat="pat-token")
        reading = await client.read_issues([*keys, "ALPHA-999", "NOPE-1"])
        assert sorted(issue.key for issue in reading.issues) == sorted(keys)
        assert sorted(reading.not_found) == ["ALPHA-999", "NOPE-1"]


async def test_moved_and_hidden_keys(sim, client_for) -> None:
    """A moved key is reported with its issue; a forbidden one is not found."""
    old, hidden = sim.seed(2, ["ALPHA"])
    new = sim.move(old, "BETA")
    sim.forbid(hidden)
    reading = await (await client_for(sim)).read_issues([old, hidden])
    assert [issue.key for issue in reading.issues] == [new]
    assert reading.moved == {old: reading.issues[0].id}
    assert reading.not_found == [hidden]


async def test_fifty_concurrent_reads_make_one_jira_call(sim, service) -> None:
    """50 concurrent reads of one uncached key share one Jira call."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.options.latency = 0.2
    sim.reset_counters()
    async with httpx.AsyncClient(base_url=service) as http:
        answers = await asyncio.gather(*(http.get(f"/api/v1/issues/{key}") for _ in range(50)))
    assert {answer.status_code for answer in answers} == {200}
    assert sum(sim.counters.values()) == 1


async def test_read_through_stores_and_tracks(sim, service, db: asyncpg.Pool) -> None:
    """A miss reads through Jira once, is stored and tracked; the next read is local."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.reset_counters()
    async with httpx.AsyncClient(base_url=service) as http:
        first = await http.get(f"/api/v1/issues/{key}")
        second = await http.get(f"/api/v1/issues/{key}")
    assert first.status_code == 200 and first.json()["source"] == "refresh"
    assert second.json()["fetched_at"] == first.json()["fetched_at"]
    assert sum(sim.counters.values()) == 1
    assert await tracking.tracked_keys(db) == [key]


async def test_unknown_key_is_404_and_negatively_cached(sim, service) -> None:
    """A key Jira does not know answers 404 issue_not_found, and is not asked again soon."""
    sim.reset_counters()
    async with httpx.AsyncClient(base_url=service) as http:
        answers = [await http.get("/api/v1/issues/NOPE-1") for _ in range(5)]
    assert {answer.status_code for answer in answers} == {404}
    assert answers[0].json()["error"]["code"] == "issue_not_found"
    assert sum(sim.counters.values()) == 1


async def test_batch_read_through_in_bulk(sim, service) -> None:
    """A batch read fetches its misses in one bulk call and names the unknown ones."""
    keys = sim.seed(30, ["ALPHA"])
    sim.reset_counters()
    async with httpx.AsyncClient(base_url=service) as http:
        answer = await http.get("/api/v1/issues", params={"keys": ",".join([*keys, "NOPE-2"])})
    body = answer.json()
    assert len(body["issues"]) == 30 and body["missing"] == ["NOPE-2"]
    assert sim.counters.get("bulkfetch") == 1


async def test_max_age_refreshes_old_entries(sim, service, db: asyncpg.Pool) -> None:
    """?max_age= re-reads an entry older than asked, and shows Jira's change."""
    (key,) = sim.seed(1, ["ALPHA"])
    async with httpx.AsyncClient(base_url=service) as http:
        await http.get(f"/api/v1/issues/{key}")
        sim.options.webhook_url = None  # the change must come from the read, not a webhook
        sim.edit_summary(key, "changed in Jira")
        cached = await http.get(f"/api/v1/issues/{key}")
        await db.execute("UPDATE issues SET fetched_at = now() - interval '1 minute'")

        # The memo learns of that write by PostgreSQL's notification: wait until it has.
        async def aged() -> bool:
            return (await http.get(f"/api/v1/issues/{key}")).json()["age_seconds"] > 30

        await wait_until(aged)
        fresh = await http.get(f"/api/v1/issues/{key}", params={"max_age": "30"})
    assert cached.json()["summary"] != "changed in Jira"
    assert fresh.json()["summary"] == "changed in Jira"


async def test_jira_down_on_a_miss_is_503_with_retry_after(sim, settings, db) -> None:
    """When Jira is unavailable, a miss answers 503 with Retry-After; cached reads still serve."""
    keys = sim.seed(2, ["ALPHA"])
    wired = jira_settings(settings, sim, jira_max_retries=0)
    async with serve(wired) as url, httpx.AsyncClient(base_url=url) as http:
        await http.get(f"/api/v1/issues/{keys[0]}")
        sim.fail_next(50, status=503)
        miss = await http.get(f"/api/v1/issues/{keys[1]}")
        hit = await http.get(f"/api/v1/issues/{keys[0]}")
    assert miss.status_code == 503 and int(miss.headers["Retry-After"]) >= 1
    assert miss.json()["error"]["code"] == "jira_unavailable"
    assert hit.status_code == 200


async def test_slow_jira_answers_503_in_bounded_time_and_fills_cache(sim, settings, db) -> None:
    """A miss waits at most READ_THROUGH_TIMEOUT; the read goes on and the next GET is a hit."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.options.latency = 0.6
    wired = jira_settings(settings, sim, read_timeout=0.2)
    async with serve(wired) as url, httpx.AsyncClient(base_url=url) as http:
        slow = await http.get(f"/api/v1/issues/{key}")
        await wait_until(lambda: stored(db, key))
        sim.options.latency = 0.0
        sim.reset_counters()
        later = await http.get(f"/api/v1/issues/{key}")
    assert slow.status_code == 503 and slow.json()["error"]["code"] == "jira_slow"
    assert later.status_code == 200 and sum(sim.counters.values()) == 0
