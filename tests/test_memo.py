"""The in-process memo: fast repeated reads, dropped by PostgreSQL's change notifications."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from service.model import CachedIssue
from service.storage import issues as store
from service.storage.pool import DatabaseUnavailableError, open_pool
from service.sync import memo as memos
from service.sync.memo import Memo
from tests.conftest import app_client
from tests.factory import make_issue
from tests.payloads import SECRET, encode, event, headers
from tests.test_ratelimit import FakeTime


def cached(id: int = 7, key: str = "PRJ-7", summary: str = "s") -> CachedIssue:
    issue = make_issue(id=id, key=key, summary=summary)
    return CachedIssue(issue, datetime.now(UTC), "poll", "ok", None, 0)


def live_memo(size: int = 100, ttl: float = 60, clock: FakeTime | None = None) -> Memo:
    memo = Memo(size, ttl, (clock or FakeTime()).clock)
    memo.live = True
    return memo


def test_put_then_get_and_drop_by_issue_id() -> None:
    """Entries are found by key and dropped by issue id, every key of the issue at once."""
    memo = live_memo()
    memo.put({"OLD-7": cached(), "PRJ-7": cached()}, memo.mark())
    assert set(memo.get(["OLD-7", "PRJ-7", "X-1"])) == {"OLD-7", "PRJ-7"}
    memo.on_notify("3,7")
    assert memo.get(["OLD-7", "PRJ-7"]) == {}


def test_a_read_that_raced_a_change_is_not_kept() -> None:
    """A row read before a change was announced is not stored: it may be the old one."""
    memo = live_memo()
    mark = memo.mark()
    memo.on_notify("7")  # the change lands while the read is in flight
    memo.put({"PRJ-7": cached()}, mark)
    memo.put({"PRJ-8": cached(id=8, key="PRJ-8")}, mark)  # another issue is unaffected
    assert set(memo.get(["PRJ-7", "PRJ-8"])) == {"PRJ-8"}


def test_star_clears_and_not_live_serves_nothing() -> None:
    """'*' (a big or truncating change) drops everything; a memo not listening answers nothing."""
    memo = live_memo()
    mark = memo.mark()
    memo.on_notify("*")
    memo.put({"PRJ-7": cached()}, mark)
    assert memo.get(["PRJ-7"]) == {}
    memo.put({"PRJ-7": cached()}, memo.mark())
    memo.live = False
    assert memo.get(["PRJ-7"]) == {}


def test_size_and_ttl_bound_the_memo() -> None:
    """The least recently used entries go first, and entries expire after the TTL."""
    memo = live_memo(size=2)
    for n in range(1, 4):
        memo.put({f"PRJ-{n}": cached(id=n, key=f"PRJ-{n}")}, memo.mark())
    assert set(memo.get(["PRJ-1", "PRJ-2", "PRJ-3"])) == {"PRJ-2", "PRJ-3"}
    fake = FakeTime()
    brief = live_memo(ttl=30, clock=fake)
    brief.put({"PRJ-7": cached()}, brief.mark())
    fake.now += 29.9
    assert set(brief.get(["PRJ-7"])) == {"PRJ-7"}
    fake.now += 0.2
    assert brief.get(["PRJ-7"]) == {}


def test_bookkeeping_resets_and_a_read_begun_before_is_not_kept() -> None:
    """Past 4x its size in remembered drops the memo resets; a read begun before is refused."""
    memo = live_memo(size=2)
    memo.put({"PRJ-7": cached()}, memo.mark())
    before = memo.mark()
    memo.on_notify(",".join(str(n) for n in range(100, 108)))  # 8 drops: not yet past 4x2
    assert set(memo.get(["PRJ-7"])) == {"PRJ-7"}
    memo.on_notify("108")  # the 9th: the memo resets
    assert memo.get(["PRJ-7"]) == {}
    memo.put({"PRJ-8": cached(id=8, key="PRJ-8")}, before)
    assert memo.get(["PRJ-8"]) == {}
    memo.put({"PRJ-8": cached(id=8, key="PRJ-8")}, memo.mark())
    assert set(memo.get(["PRJ-8"])) == {"PRJ-8"}


async def wait_for(check, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def summary_of(http: httpx.AsyncClient) -> str:
    summary: str = (await http.get("/api/v1/issues/PRJ-7")).json()["summary"]
    return summary


async def test_a_write_by_another_replica_reaches_the_memo(db: asyncpg.Pool, settings) -> None:
    """A change written elsewhere (here plain SQL) is announced and the next read shows it."""
    await store.upsert_issues(db, [make_issue()], "poll")
    async with app_client(settings) as http:
        assert await wait_for(lambda: _memo_live(http))
        assert await summary_of(http) == "Login fails"
        await db.execute("UPDATE issues SET summary = 'changed elsewhere'")

        async def changed() -> bool:
            return await summary_of(http) == "changed elsewhere"

        assert await wait_for(changed, 2.0)


async def test_webhook_on_one_replica_is_read_on_another(db: asyncpg.Pool, settings) -> None:
    """Two replicas: a webhook applied by one is seen by the other's next reads."""
    await store.upsert_issues(db, [make_issue(summary="before")], "poll")
    replica = {"webhook_secret": SECRET}
    async with app_client(settings, **replica) as one, app_client(settings, **replica) as two:
        assert await wait_for(lambda: _memo_live(two))
        assert await summary_of(two) == "before"
        body = encode(event(summary="after", updated="2026-11-26T06:00:00.000-0600"))
        assert (await one.post("/api/v1/webhooks/jira", content=body, headers=headers(body))).json()

        async def seen() -> bool:
            return await summary_of(two) == "after"

        assert await wait_for(seen, 2.0)


async def test_memo_is_off_while_its_listener_is_down(db: asyncpg.Pool, settings) -> None:
    """With the listener's connection killed, reads go to PostgreSQL, then the memo returns."""
    await store.upsert_issues(db, [make_issue()], "poll")
    async with app_client(settings) as http:
        assert await wait_for(lambda: _memo_live(http))
        await summary_of(http)
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'jira-status-cache listener'"
            " AND datname = current_database()"
        )
        assert await wait_for(lambda: _memo_live(http, False))
        await db.execute("ALTER TABLE issues DISABLE TRIGGER USER")
        try:
            await db.execute("UPDATE issues SET summary = 'unannounced'")
            assert await summary_of(http) == "unannounced"  # not served from a stale memo
        finally:
            await db.execute("ALTER TABLE issues ENABLE TRIGGER USER")
        assert await wait_for(lambda: _memo_live(http), 5.0)


async def test_a_change_unheard_while_the_listener_was_down_is_read_after(db, settings) -> None:
    """A change nobody heard while the listener was down is served once it reconnects."""
    await store.upsert_issues(db, [make_issue()], "poll")
    async with app_client(settings, memo_ttl=3600.0) as http:
        assert await wait_for(lambda: _memo_live(http))
        assert await summary_of(http) == "Login fails"  # now in the memo
        await db.execute("ALTER TABLE issues DISABLE TRIGGER USER")
        try:
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'jira-status-cache listener'"
                " AND datname = current_database()"
            )
            assert await wait_for(lambda: _memo_live(http, False))
            await db.execute("UPDATE issues SET summary = 'unannounced'")
        finally:
            await db.execute("ALTER TABLE issues ENABLE TRIGGER USER")
        assert await wait_for(lambda: _memo_live(http), 5.0)
        assert await summary_of(http) == "unannounced"


async def test_the_memo_serves_what_it_holds_while_postgresql_is_unreachable(database_url) -> None:
    """With PostgreSQL out of reach, issues held in the memo are served; others still fail."""
    memo = live_memo()
    memo.put({"PRJ-7": cached(summary="held")}, memo.mark())
    memo.on_down()  # the listener went too
    gone = await open_pool(database_url)
    await gone.close()
    found = await memos.select(gone, memo, ["PRJ-7"])
    with pytest.raises(DatabaseUnavailableError):
        await memos.select(gone, memo, ["PRJ-7", "PRJ-8"])
    assert found["PRJ-7"].issue.summary == "held"


async def _memo_live(http: httpx.AsyncClient, live: bool = True) -> bool:
    metrics = (await http.get("/metrics")).text
    return f"jsc_memo_live {1.0 if live else 0.0}" in metrics
