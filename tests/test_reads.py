"""The read-through and bounded refreshes, against the simulator and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import httpx
import pytest

from jira_simulator import Simulator
from service.config import JiraSettings, Settings
from service.jira.errors import JiraUnavailableError
from service.model import CachedIssue
from service.storage import issues as store
from service.storage import links, tracking
from service.sync.reads import JiraSlowError, Reader
from service.sync.wiring import Parts, jira_parts
from tests.conftest import app_client
from tests.live import free_port, jira_settings, wait_until


async def stored(db: asyncpg.Pool) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM issues WHERE state = 'ok'")
    return count


@pytest.fixture
async def parts_for(db: asyncpg.Pool, settings: Settings):
    """Open the factory's parts over a simulator; closed (and drained) at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def build(sim: Simulator | None, **changes: object) -> Parts:
            wired = settings_for(settings, sim, **changes)
            return await stack.enter_async_context(jira_parts(wired, db))

        yield build


def settings_for(settings: Settings, sim: Simulator | None, **changes: object) -> Settings:
    if sim is not None:
        return jira_settings(settings, sim, **changes)
    jira = {k.removeprefix("jira_"): v for k, v in changes.items() if k.startswith("jira_")}
    own = {k: v for k, v in changes.items() if not k.startswith("jira_")}
    return dataclasses.replace(settings, jira=JiraSettings(**jira), **own)  # type: ignore[arg-type]


class HeldReader(Reader):
    """A reader whose cache misses wait for `hold` (the first read) before going on."""

    hold: Awaitable[object] | None = None

    async def cached(self, keys: list[str]) -> dict[str, CachedIssue]:
        found = await super().cached(keys)
        if self.hold is not None and not found:
            await asyncio.shield(self.hold)  # missed while the flight was out; it lands now
        return found


async def test_readers_who_missed_before_a_flight_landed_do_not_fly_again(
    db: asyncpg.Pool, sim: Simulator, parts_for, settings: Settings
) -> None:
    """50 reads that missed the cache while a flight was out, asking after it landed: 1 call."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.options.latency = 0.3
    parts = await parts_for(sim)
    reader = HeldReader(db, None, parts.refresher, parts.reader.settings)
    sim.reset_counters()
    first = asyncio.create_task(reader.read([key]))
    await wait_until(lambda: _flying(parts, key))
    reader.hold = first
    rest = await asyncio.gather(*(reader.read([key]) for _ in range(49)))
    assert all(key in found for found in [await first, *rest])
    assert sum(sim.counters.values()) == 1


async def _flying(parts: Parts, key: str) -> bool:
    return parts.refresher is not None and parts.refresher.flying(key)


async def test_refused_connection_is_unavailable_at_once(parts_for, settings) -> None:
    """With nothing listening at Jira's address, a miss fails as unavailable, not slow."""
    closed = f"http://127.0.0.1:{free_port()}"
    parts = await parts_for(None, jira_base_url=closed, jira_email="a@b.c", jira_api_token="t")
    with pytest.raises(JiraUnavailableError, match="Connect call failed"):
        await parts.reader.read(["PRJ-7"])
    assert parts.client is not None
    assert sum(parts.client.stats.requests.values()) == 1


@pytest.mark.parametrize("trouble", ["slow", "refused"])
async def test_cached_entry_is_served_when_jira_cannot_answer(
    db: asyncpg.Pool, sim: Simulator, parts_for, trouble: str
) -> None:
    """A cached entry older than max_age is answered as it is when Jira is slow or refuses."""
    (key,) = sim.seed(1, ["ALPHA"])
    first = await parts_for(sim)
    await first.reader.read([key])
    await db.execute("UPDATE issues SET fetched_at = now() - interval '1 hour'")
    if trouble == "slow":
        sim.options.latency = 1.0
        parts = await parts_for(sim, read_timeout=0.1)
    else:
        closed = f"http://127.0.0.1:{free_port()}"
        parts = await parts_for(sim, jira_base_url=closed)
    found = await parts.reader.read([key], max_age=0)
    assert found[key].issue.key == key


async def test_a_read_past_its_bound_is_drained_on_shutdown(
    db: asyncpg.Pool, sim: Simulator, settings: Settings
) -> None:
    """A read that answered jira_slow goes on, and shutdown waits for it to store its issue."""
    (key,) = sim.seed(1, ["ALPHA"])
    sim.options.latency = 0.5
    async with jira_parts(jira_settings(settings, sim, read_timeout=0.1), db) as parts:
        with pytest.raises(JiraSlowError):
            await parts.reader.read([key])
        assert len(parts.reader.background) == 1
    assert await store.select_by_key(db, key) is not None


async def test_a_refresh_cut_short_keeps_the_chunks_it_read(
    db: asyncpg.Pool, sim: Simulator, parts_for
) -> None:
    """Chunks are stored as they arrive: cancelling a refresh keeps what it read."""
    keys = sim.seed(30, ["ALPHA"])
    sim.hang_next(1, 60.0, endpoint="bulkfetch")
    parts = await parts_for(sim, jira_batch_size=10)
    refresh = asyncio.create_task(parts.refresher.refresh(keys, "refresh"))
    await wait_until(lambda: _at_least(db, 20))
    refresh.cancel()
    await asyncio.gather(refresh, return_exceptions=True)
    assert await stored(db) == 20


async def _at_least(db: asyncpg.Pool, count: int) -> bool:
    return await stored(db) >= count


@pytest.fixture
async def slow_http(
    db: asyncpg.Pool, sim: Simulator, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over 30 linked keys, with a Jira whose first bulk answer takes 1.5 s."""
    keys = sim.seed(30, ["ALPHA"])
    for key in keys:
        await links.link(db, "p", key)
    await tracking.make_due(db, keys)
    sim.hang_next(1, 1.5, endpoint="bulkfetch")
    wired = jira_settings(settings, sim, jira_batch_size=10, refresh_timeout=0.3)
    async with app_client(wired) as http:
        yield http


async def test_project_refresh_answers_within_its_bound(slow_http, db: asyncpg.Pool) -> None:
    """Past REFRESH_TIMEOUT a project refresh answers what is done, complete false, and goes on."""
    http = slow_http
    answer = await http.post("/api/v1/projects/p/jira/refresh")
    report = answer.json()
    assert answer.status_code == 200 and report["complete"] is False
    assert (report["requested"], report["refreshed"]) == (30, 20)
    await wait_until(lambda: _at_least(db, 30))


async def test_cron_refresh_answers_within_its_bound(slow_http, db: asyncpg.Pool) -> None:
    """Past REFRESH_TIMEOUT the cron route answers complete false while the cycle goes on."""
    http = slow_http
    answer = await http.get("/api/v1/cron/jira-refresh")
    assert answer.status_code == 200 and answer.json()["complete"] is False
    await wait_until(lambda: _at_least(db, 30))
    done = (await http.get("/api/v1/cron/jira-refresh")).json()
    assert done["complete"] is True
