"""The change log: what it records, the no-gap proof, paging, filters, retention, the stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import asyncpg
import httpx
import pytest
import uvicorn
from sse_starlette.sse import AppStatus

from service.http.app import create_app
from service.model import Assignee
from service.storage import changes, inbox, links
from service.storage import issues as store
from service.storage.changes import Change, Cursor, Filter
from service.storage.inbox import Update
from service.sync import feed
from service.sync.schedule import prune_changes_job
from tests.factory import BASE_TIME, DONE, make_issue
from tests.live import _Server, free_port, serve

ALL = Filter()


@pytest.fixture
async def log(db: asyncpg.Pool) -> asyncpg.Pool:
    """Empty tables and an empty change log, never pruned."""
    await db.execute("TRUNCATE changes")
    await db.execute("UPDATE changes_pruned SET txid = '0', position = 0")
    return db


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    """Poll until the check holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.005)


async def settle(pool: asyncpg.Pool) -> None:
    """Until every committed entry is readable (other sessions on the server may hold it back)."""
    await eventually(lambda: changes.settled(pool))


async def read_all(pool: asyncpg.Pool, after: Cursor | None = None, only: Filter = ALL) -> list:
    """Every committed entry after the cursor (default: the whole log), oldest first."""
    await settle(pool)
    cursor = after or await changes.first_cursor(pool)
    found: list[Change] = []
    while (page := await changes.read_changes(pool, cursor, only, 3)).changes:
        found += page.changes
        cursor = page.next
    return found


# What is recorded


async def test_each_kind_of_change_is_recorded_once_with_its_fields_and_source(log) -> None:
    """Newly cached, status, summary, assignee, priority, key move, not_found, deleted: one each."""
    mia = Assignee("5b10", "Mia Krystof")
    await store.upsert_issues(log, [make_issue(assignee=None)], "poll")
    await inbox.record_and_write(log, [Update("d-1", "e", make_issue(status=DONE, minutes=1))])
    await store.upsert_issues(log, [make_issue(status=DONE, summary="S", minutes=2)], "refresh")
    await store.upsert_issues(
        log, [make_issue(status=DONE, summary="S", assignee=mia, minutes=3)], "poll"
    )
    moved = dataclasses.replace(
        make_issue(status=DONE, summary="S", assignee=mia, minutes=4), key="NEW-1", priority="Low"
    )
    await store.upsert_issues(log, [moved], "poll")
    await store.mark_not_found(log, ["NEW-1"], "poll")
    await store.mark_deleted(log, 10007, "NEW-1", BASE_TIME + timedelta(minutes=5))
    found = await read_all(log)
    assert [(c.source, c.fields) for c in found] == [
        (
            "poll",
            {
                "key": [None, "PRJ-7"],
                "status": [None, {"id": "3", "name": "In Progress", "category": "indeterminate"}],
                "summary": [None, "Login fails"],
                "priority": [None, "High"],
                "state": [None, "ok"],
            },
        ),
        (
            "webhook",
            {
                "status": [
                    {"id": "3", "name": "In Progress", "category": "indeterminate"},
                    {"id": "10001", "name": "Done", "category": "done"},
                ]
            },
        ),
        ("refresh", {"summary": ["Login fails", "S"]}),
        ("poll", {"assignee": [None, {"account_id": "5b10", "display_name": "Mia Krystof"}]}),
        ("poll", {"key": ["PRJ-7", "NEW-1"], "priority": ["High", "Low"]}),
        ("poll", {"state": ["ok", "not_found"]}),
        ("webhook", {"state": ["not_found", "deleted"]}),
    ]
    assert found[-1].cached.issue.key == "NEW-1" and found[-1].cached.state == "deleted"


async def test_a_grouped_write_and_a_write_by_hand_record_each_changed_issue(log) -> None:
    """One statement of many deliveries, and an UPDATE by hand, record each change once."""
    first = [make_issue(id=n, key=f"PRJ-{n}") for n in range(1, 5)]
    await store.upsert_issues(log, first, "poll")
    group = [
        Update(f"d-{issue.id}", "e", dataclasses.replace(issue, summary=f"S{issue.id}"))
        for issue in first[:3]
    ]
    again = Update("d-4", "e", first[3])  # the same data: nothing served changes
    await inbox.record_and_write(log, [*group, again, Update("d-1", "e", first[0])])
    await log.execute("UPDATE issues SET status_name = 'By hand' WHERE id IN (1, 2)")
    found = await read_all(log)
    created, grouped, by_hand = found[:4], found[4:7], found[7:]
    assert [(c.cached.issue.id, c.source, list(c.fields)) for c in grouped] == [
        (n, "webhook", ["summary"]) for n in (1, 2, 3)
    ]
    assert [c.fields["summary"] for c in grouped] == [["Login fails", f"S{n}"] for n in (1, 2, 3)]
    assert [(c.cached.issue.id, list(c.fields)) for c in by_hand] == [
        (1, ["status"]),
        (2, ["status"]),
    ]
    assert len(created) == 4 and len(found) == 9


async def test_a_write_that_changes_nothing_served_records_nothing(log) -> None:
    """A newer Jira time with the same fields, a failed read and its recovery record nothing."""
    await store.upsert_issues(log, [make_issue()], "poll")
    await store.upsert_issues(log, [make_issue(minutes=1)], "poll")
    await inbox.record_and_write(log, [Update("d-1", "e", make_issue(minutes=2))])
    await store.mark_failed(log, ["PRJ-7"], "Jira answered 500")
    await store.upsert_issues(log, [make_issue(minutes=3)], "refresh")
    assert [c.fields.get("state") for c in await read_all(log)] == [[None, "ok"]]


async def test_an_entry_carries_the_issue_as_get_renders_it(log, client) -> None:
    """Each entry of a page has its cursor, id, key, time, source, fields and the rendered issue."""
    start = (await client.get("/api/v1/changes")).json()["next"]
    await store.upsert_issues(log, [make_issue()], "poll")
    await settle(log)
    page = (await client.get(f"/api/v1/changes?after={start}")).json()
    served = (await client.get("/api/v1/issues/PRJ-7")).json()
    [entry] = page["changes"]
    assert entry["cursor"] < page["next"] and entry["issue_id"] == "10007"
    assert entry["key"] == "PRJ-7" and entry["source"] == "poll"
    assert {k: v for k, v in entry["issue"].items() if k != "age_seconds"} == {
        k: v for k, v in served.items() if k != "age_seconds"
    }


# The no-gap proof


async def test_a_tailing_reader_sees_the_committed_log_without_gap_or_duplicate(
    log, database_url
) -> None:
    """Writers commit out of txid order; a tailing reader gets every change once, in issue order."""
    rng = random.Random(7)  # noqa: S311  # a repeatable schedule, not a secret
    issues = [make_issue(id=n, key=f"PRJ-{n}", summary="s0") for n in range(1, 6)]
    await store.upsert_issues(log, issues, "poll")
    await settle(log)
    start = await changes.current_cursor(log)
    committed: list[tuple[int, str]] = []
    xids_in_commit_order: list[int] = []
    clock = iter(range(1, 10**6))

    async def writer(w: int) -> None:
        async with log.acquire() as connection:
            for n in range(15):
                tx = connection.transaction()
                await tx.start()
                xid = await connection.fetchval("SELECT pg_current_xact_id()")
                await asyncio.sleep(rng.random() * 0.004)  # transactions of varying length
                issue, summary = rng.choice(issues), f"w{w}-{n}"
                updated = BASE_TIME + timedelta(seconds=next(clock))
                write = dataclasses.replace(issue, summary=summary, updated=updated)
                outcome = await store.upsert_issues(connection, [write], "webhook")
                await asyncio.sleep(rng.random() * 0.004)
                if n % 7 == 3:
                    await tx.rollback()
                    continue
                await tx.commit()
                xids_in_commit_order.append(xid)
                if outcome[issue.id] in ("created", "updated"):
                    committed.append((issue.id, summary))

    seen: list[Change] = []
    stop = asyncio.Event()

    async def reader(follower: feed.Feed) -> None:
        async for change in feed.follow(follower, start, ALL, stop):
            seen.append(change)

    async with feed.following(log, database_url) as follower:
        tail = asyncio.create_task(reader(follower))
        await asyncio.gather(*(writer(w) for w in range(6)))
        await eventually(lambda: _at_least(seen, len(committed)), 30)
        stop.set()
        await tail
    assert xids_in_commit_order != sorted(xids_in_commit_order), "commits kept txid order"
    cursors = [change.cursor for change in seen]
    assert cursors == sorted(set(cursors)), "duplicated or out of order"
    assert sorted((c.cached.issue.id, c.fields["summary"][1]) for c in seen) == sorted(committed)
    assert await read_all(log, cursors[-1]) == []  # and nothing more
    # In order per issue: each entry starts from where the issue's previous one ended.
    last = {issue.id: "s0" for issue in issues}
    for change in seen:
        old, new = change.fields["summary"]
        assert old == last[change.cached.issue.id]
        last[change.cached.issue.id] = new


async def test_an_entry_waits_for_older_transactions_then_comes_first(log) -> None:
    """A younger transaction's entry waits while an older one is open; the older one sorts first."""
    start = await changes.current_cursor(log)
    async with log.acquire() as old, log.acquire() as young:
        older = old.transaction()
        await older.start()
        await store.upsert_issues(old, [make_issue(id=1, key="PRJ-1")], "poll")
        xid = await old.fetchval("SELECT pg_current_xact_id()")
        await store.upsert_issues(young, [make_issue(id=2, key="PRJ-2")], "poll")
        page = await changes.read_changes(log, start, ALL, 10)
        assert page.changes == [] and page.next <= Cursor(xid, 0)
        await older.commit()
    assert [c.cached.issue.key for c in await read_all(log, page.next)] == ["PRJ-1", "PRJ-2"]


async def test_an_older_transaction_writing_an_issue_last_keeps_the_issue_in_order(log) -> None:
    """When a lower txid writes an issue after a higher one did, its entry still comes after."""
    await store.upsert_issues(log, [make_issue(summary="first")], "poll")
    await settle(log)
    start = await changes.current_cursor(log)
    async with log.acquire() as old, log.acquire() as young:
        older = old.transaction()
        await older.start()
        await old.fetchval("SELECT pg_current_xact_id()")  # the lower id, taken first
        await store.upsert_issues(young, [make_issue(summary="second", minutes=1)], "poll")
        await store.upsert_issues(old, [make_issue(summary="third", minutes=2)], "poll")
        await older.commit()
    found = await read_all(log, start)
    assert [c.fields["summary"] for c in found] == [["first", "second"], ["second", "third"]]


async def test_a_reader_gets_changes_while_the_listener_is_down(log, database_url) -> None:
    """With its LISTEN connection killed, the feed still delivers, then listens again."""
    start = await changes.current_cursor(log)
    seen: list[Change] = []
    stop = asyncio.Event()

    async def reader(follower: feed.Feed) -> None:
        async for change in feed.follow(follower, start, ALL, stop):
            seen.append(change)

    async with feed.following(log, database_url) as follower:
        tail = asyncio.create_task(reader(follower))
        await log.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'jira-status-cache listener'"
            " AND datname = current_database()"
        )
        await eventually(lambda: _is(asyncio.sleep(0, follower.live), False))
        await store.upsert_issues(log, [make_issue()], "poll")
        await eventually(lambda: _at_least(seen, 1))
        await eventually(lambda: _is(asyncio.sleep(0, follower.live), True))
        stop.set()
        await tail
    assert [c.cached.issue.key for c in seen] == ["PRJ-7"]


async def test_an_announcement_while_nobody_waits_is_checked_when_a_reader_waits(
    log, database_url
) -> None:
    """With no reader waiting, a notification costs no query; the next reader to wait has
    it checked then, and is woken: nothing announced in between is missed."""
    async with feed.following(log, database_url) as follower:
        await eventually(lambda: _is(asyncio.sleep(0, follower.live), True))
        heard = follower.notifications  # its connecting counts as one
        waiter = follower.waiter()  # a reader's: taken before its read, as readers do
        await store.upsert_issues(log, [make_issue()], "poll")
        await eventually(lambda: _is(asyncio.sleep(0, follower.notifications), heard + 1))
        for _ in range(3):  # round trips a settle, had one started, would have made too
            await log.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())")
        assert follower.wakes == 0 and not waiter.is_set()
        await asyncio.wait_for(follower.wait(waiter, asyncio.Event()), 30)
        assert waiter.is_set() and follower.wakes == 1


# GET /api/v1/changes


async def test_pages_follow_next_and_an_empty_page_says_where_to_resume(log, client) -> None:
    """Paging with next reads each entry once; without after the page starts now."""
    await store.upsert_issues(log, [make_issue(id=n, key=f"PRJ-{n}") for n in (1, 2, 3)], "poll")
    await settle(log)
    now = (await client.get("/api/v1/changes")).json()
    assert now["changes"] == []
    keys, after = [], None
    for _ in range(3):
        query = f"after={after}" if after else "from=beginning"
        page = (await client.get(f"/api/v1/changes?{query}&limit=2")).json()
        keys += [entry["key"] for entry in page["changes"]]
        after = page["next"]
    assert keys == ["PRJ-1", "PRJ-2", "PRJ-3"] and page["changes"] == []
    await store.upsert_issues(log, [make_issue(id=4, key="PRJ-4")], "poll")
    await settle(log)
    for resume in (after, now["next"]):
        page = (await client.get(f"/api/v1/changes?after={resume}")).json()
        assert [entry["key"] for entry in page["changes"]] == ["PRJ-4"]


async def test_filters_by_project_links_and_by_keys_old_or_new(log, client) -> None:
    """project_id= keeps the project's linked issues; keys= matches a key the issue had."""
    await links.link(log, "checkout", "PRJ-1")
    await store.upsert_issues(log, [make_issue(id=n, key=f"PRJ-{n}") for n in (1, 2)], "poll")
    await store.upsert_issues(log, [make_issue(id=2, key="NEW-2", minutes=1)], "poll")
    await store.add_aliases(log, {"PRJ-2": 2})
    await settle(log)

    async def keys(query: str) -> list[str]:
        page = (await client.get(f"/api/v1/changes?from=beginning&{query}")).json()
        return [entry["key"] for entry in page["changes"]]

    assert await keys("project_id=checkout") == ["PRJ-1"]
    assert await keys("keys=prj-2") == ["PRJ-2", "NEW-2"]
    assert await keys("project_id=nobody") == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("after=not-a-cursor", "invalid_cursor"),
        (f"after={Cursor(2**62, 1).encode()}", "invalid_cursor"),
        ("after=%C3%A9", "invalid_cursor"),
        ("from=yesterday", "invalid_from"),
        ("limit=0", "invalid_limit"),
        ("keys=PRJ", "invalid_key"),
        ("project_id=a%20b", "invalid_project_id"),
    ],
)
async def test_bad_input_answers_400_naming_it(log, client, query, code) -> None:
    """A malformed or foreign cursor, from, limit, key or project id answers 400 with its code."""
    streamed = [] if code == "invalid_limit" else ["/api/v1/changes/stream"]  # no limit there
    for path in ["/api/v1/changes", *streamed]:
        response = await client.get(f"{path}?{query}")
        assert response.status_code == 400 and response.json()["error"]["code"] == code


async def test_pruning_keeps_the_retention_and_answers_410_behind_it(log, client) -> None:
    """Entries past the retention go; a cursor before them answers 410 cursor_expired."""
    await store.upsert_issues(log, [make_issue(id=n, key=f"PRJ-{n}") for n in (1, 2)], "poll")
    await settle(log)
    old = (await client.get("/api/v1/changes?from=beginning&limit=1")).json()["next"]
    assert await changes.prune_changes(log, 3600) == 0
    await log.execute("UPDATE changes SET at = at - interval '2 hours'")
    await store.upsert_issues(log, [make_issue(id=3, key="PRJ-3")], "poll")
    await settle(log)
    assert await changes.prune_changes(log, 3600) == 2
    for path in ("/api/v1/changes", "/api/v1/changes/stream"):
        response = await client.get(f"{path}?after={old}")
        assert response.status_code == 410
        assert response.json()["error"]["code"] == "cursor_expired"
    page = (await client.get("/api/v1/changes?from=beginning")).json()
    assert [entry["key"] for entry in page["changes"]] == ["PRJ-3"]


async def test_the_scheduled_pruning_keeps_the_configured_days(log) -> None:
    """The scheduler's job deletes entries older than CHANGES_RETENTION days, keeps the rest."""
    await store.upsert_issues(log, [make_issue(id=n, key=f"PRJ-{n}") for n in (1, 2)], "poll")
    await log.execute("UPDATE changes SET at = now() - interval '8 days' WHERE issue_id = 1")
    await settle(log)
    await prune_changes_job(log, 7.0)
    assert [c.cached.issue.key for c in await read_all(log)] == ["PRJ-2"]


# GET /api/v1/changes/stream


async def events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The Server-Sent Events of a streamed answer, comments and pings left out."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def test_a_stream_resumed_with_last_event_id_gets_exactly_what_it_missed(
    log, settings
) -> None:
    """A client that reconnects with Last-Event-ID receives the entries it missed, once."""
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        async with http.stream("GET", "/api/v1/changes/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response)
            await store.upsert_issues(log, [make_issue(id=1, key="PRJ-1")], "poll")
            await store.upsert_issues(log, [make_issue(id=2, key="PRJ-2")], "webhook")
            received = [await anext(stream) for _ in range(2)]
        assert [json.loads(e["data"])["key"] for e in received] == ["PRJ-1", "PRJ-2"]
        assert received[1]["id"] == json.loads(received[1]["data"])["cursor"]
        await store.upsert_issues(
            log, [make_issue(id=n, key=f"PRJ-{n}") for n in (3, 4, 5)], "poll"
        )
        resumed = {"Last-Event-ID": received[1]["id"]}
        async with http.stream("GET", "/api/v1/changes/stream", headers=resumed) as response:
            stream = events(response)
            async with asyncio.timeout(15):
                missed = [json.loads((await anext(stream))["data"])["key"] for _ in range(3)]
            await store.upsert_issues(log, [make_issue(id=6, key="PRJ-6")], "poll")
            async with asyncio.timeout(15):
                after = json.loads((await anext(stream))["data"])["key"]
        assert missed == ["PRJ-3", "PRJ-4", "PRJ-5"] and after == "PRJ-6"


async def test_a_stream_is_woken_by_a_write_not_by_polling(log, settings) -> None:
    """An idle stream reads nothing until a write's notification wakes it; /metrics counts it."""
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        async with http.stream("GET", "/api/v1/changes/stream?project_id=checkout") as response:
            stream = events(response)
            # The feed's connection announced itself; its first waiting reader (this
            # stream's) has that checked once: counted before, not among the writes'.
            await eventually(lambda: _more(metric(http, "jsc_change_feed_wakes_total"), 0))
            before = await metric(http, "jsc_change_feed_wakes_total")
            await links.link(log, "checkout", "PRJ-1")
            await store.upsert_issues(log, [make_issue(id=2, key="PRJ-2")], "poll")
            await store.upsert_issues(log, [make_issue(id=1, key="PRJ-1")], "poll")
            async with asyncio.timeout(15):
                entry = json.loads((await anext(stream))["data"])
            assert entry["key"] == "PRJ-1"
            assert await metric(http, "jsc_change_streams") == 1
            assert await metric(http, "jsc_change_stream_events_total") == 1
            # Two transactions, so at most two wakes: nothing polled in between.
            assert 1 <= await metric(http, "jsc_change_feed_wakes_total") - before <= 2
        await eventually(lambda: _is(metric(http, "jsc_change_streams"), 0))


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    return next(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")
    )


async def test_open_streams_end_cleanly_when_the_server_shuts_down(log, settings) -> None:
    """SIGTERM ends every open stream with a complete answer: uvicorn's shutdown does not wait."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _is(asyncio.sleep(0, server.started), True))
        url = f"http://127.0.0.1:{port}/api/v1/changes/stream"
        async with httpx.AsyncClient(timeout=15) as http, http.stream("GET", url) as response:
            server.handle_exit(signal.SIGTERM, None)
            async with asyncio.timeout(15):
                async for _ in response.aiter_lines():
                    pass  # ends when the server completes the answer
        async with asyncio.timeout(15):
            await task
    finally:
        AppStatus.should_exit = False  # sse-starlette keeps it process-wide
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


async def _at_least(found: list[Change], count: int) -> bool:
    return len(found) >= count


async def _more(value: Awaitable[float], than: float) -> bool:
    return await value > than


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


# jira-status-cache changes


async def test_changes_command_follows_a_project_a_line_per_change(log, database_url) -> None:
    """`changes --follow --project ID` prints a line per change of its issues; Ctrl-C ends it."""
    await links.link(log, "checkout", "PRJ-1")
    await store.upsert_issues(log, [make_issue(id=1, key="PRJ-1")], "poll")
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "service", "changes", "--follow", "--from", "beginning"],
        *["--project", "checkout"],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            first = (await process.stdout.readline()).decode()
            await store.upsert_issues(log, [make_issue(id=2, key="PRJ-2")], "poll")
            await store.upsert_issues(
                log, [make_issue(id=1, key="PRJ-1", status=DONE, minutes=1)], "webhook"
            )
            second = (await process.stdout.readline()).decode()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = await process.communicate()
    assert "PRJ-1" in first and "state: - -> 'ok'" in first
    assert "PRJ-1" in second and "webhook" in second
    assert "status: In Progress (indeterminate) -> Done (done)" in second
    assert process.returncode == 0, stderr.decode()


async def test_changes_command_without_follow_prints_the_log_and_exits(log, database_url) -> None:
    """`changes` prints the whole retained log, oldest first, and exits 0."""
    await store.upsert_issues(log, [make_issue(id=n, key=f"PRJ-{n}") for n in (1, 2)], "poll")
    await settle(log)
    result = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "service", "changes"],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await result.communicate()
    lines = out.decode().splitlines()
    assert result.returncode == 0 and len(lines) == 2
    assert "PRJ-1" in lines[0] and "PRJ-2" in lines[1]
