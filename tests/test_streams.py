"""Many streams, one reader: the hub's shared reads, STREAM_LIMIT, and dropping a slow stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.http import changes as change_routes
from service.storage import issues as store
from service.storage import links
from tests.factory import make_issue
from tests.live import serve
from tests.test_changes import _is, events, eventually, metric

STREAM = "/api/v1/changes/stream"


@pytest.fixture
async def log(db: asyncpg.Pool) -> asyncpg.Pool:
    """Empty tables and an empty change log, never pruned."""
    await db.execute("TRUNCATE changes")
    await db.execute("UPDATE changes_pruned SET txid = '0', position = 0")
    return db


async def keys_of(stream: AsyncIterator[dict[str, str]], count: int) -> list[str]:
    async with asyncio.timeout(15):
        return [json.loads((await anext(stream))["data"])["key"] for _ in range(count)]


async def opened(http: httpx.AsyncClient, path: str, **headers: str) -> httpx.Response:
    response = await http.send(http.build_request("GET", path, headers=headers), stream=True)
    assert response.status_code == 200, response.status_code
    return response


async def test_every_stream_gets_what_its_filter_admits_from_one_read_per_wake(
    log: asyncpg.Pool, settings: Settings
) -> None:
    """Twelve streams with three filters each get their entries; the log is read once per wake."""
    queries = ["", "?project_id=checkout", "?keys=prj-2"] * 4
    expected = {
        "": ["PRJ-1", "PRJ-2", "PRJ-3", "NEW-2"],
        "?project_id=checkout": ["PRJ-1"],
        "?keys=prj-2": ["PRJ-2", "NEW-2"],
    }
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        answers = [await opened(http, STREAM + query) for query in queries]
        streams = [events(answer) for answer in answers]
        await eventually(lambda: _is(metric(http, "jsc_change_hub_taps"), 12))
        reads = await metric(http, "jsc_change_hub_reads_total")
        wakes = await metric(http, "jsc_change_feed_wakes_total")
        await links.link(log, "checkout", "PRJ-1")
        for n in (1, 2, 3):
            await store.upsert_issues(log, [make_issue(id=n, key=f"PRJ-{n}")], "poll")
        async with log.acquire() as connection, connection.transaction():
            await store.upsert_issues(
                connection, [make_issue(id=2, key="NEW-2", minutes=1)], "poll"
            )
            await store.add_aliases(connection, {"PRJ-2": 2})
        for query, stream in zip(queries, streams, strict=True):
            assert await keys_of(stream, len(expected[query])) == expected[query]
        read = await metric(http, "jsc_change_hub_reads_total") - reads
        woken = await metric(http, "jsc_change_feed_wakes_total") - wakes
        for answer in answers:
            await answer.aclose()
    assert 1 <= read <= woken + 1 < 12


async def test_a_stream_beyond_stream_limit_answers_503_with_retry_after(
    log: asyncpg.Pool, settings: Settings
) -> None:
    """With STREAM_LIMIT streams open, another answers 503 too_many_streams; a closed one frees."""
    limited = dataclasses.replace(settings, stream_limit=2)
    async with serve(limited) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        first, second = [await opened(http, STREAM) for _ in range(2)]
        refused = await http.get(STREAM)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "too_many_streams"
        await first.aclose()
        await eventually(lambda: _is(metric(http, "jsc_change_streams"), 1))
        third = await opened(http, STREAM)
        await second.aclose()
        await third.aclose()


async def test_a_stream_a_buffer_behind_is_dropped_with_where_to_resume(
    log: asyncpg.Pool, settings: Settings
) -> None:
    """A stream STREAM_BUFFER entries behind gets a `dropped` event whose id resumes it exactly."""
    small = dataclasses.replace(settings, stream_buffer=3)
    async with serve(small) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        answer = await opened(http, STREAM)
        stream = events(answer)
        await store.upsert_issues(log, [make_issue(id=1, key="PRJ-1")], "poll")
        assert await keys_of(stream, 1) == ["PRJ-1"]
        await eventually(lambda: _is(metric(http, "jsc_change_hub_taps"), 1))
        ten = [make_issue(id=n, key=f"PRJ-{n}") for n in range(2, 12)]
        await store.upsert_issues(log, ten, "poll")  # one transaction: one page of ten
        async with asyncio.timeout(15):
            dropped = await anext(stream)
        assert dropped["event"] == "dropped"
        assert json.loads(dropped["data"])["resume_after"] == dropped["id"]
        assert await metric(http, "jsc_change_streams_dropped_total") == 1
        await answer.aclose()
        resumed = await opened(http, STREAM, **{"Last-Event-ID": dropped["id"]})
        keys = await keys_of(events(resumed), 10)
        await resumed.aclose()
    assert keys == [f"PRJ-{n}" for n in range(2, 12)]


async def test_a_stream_whose_client_reads_nothing_is_closed_without_an_error(
    log: asyncpg.Pool,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that stops reading altogether is disconnected: an info line, no ERROR."""
    monkeypatch.setattr(change_routes, "STALLED_SECONDS", 0.5)
    caplog.set_level(logging.INFO)
    server_log = logging.getLogger("uvicorn.error")  # uvicorn's, which does not propagate
    roomy = dataclasses.replace(settings, stream_buffer=1_000_000)
    async with serve(roomy) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        server_log.addHandler(caplog.handler)  # now: uvicorn's Config set its loggers up anew
        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        sock.connect((parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET {STREAM} HTTP/1.1\r\nHost: cache\r\n\r\n".encode())
        await reader.readuntil(b"following changes")
        await eventually(lambda: _is(metric(http, "jsc_change_hub_taps"), 1))
        many = [make_issue(id=n, key=f"PRJ-{n}", summary="x" * 500) for n in range(1, 3001)]
        await store.upsert_issues(log, many, "poll")
        await eventually(lambda: _is(metric(http, "jsc_change_streams"), 0), seconds=60)
        writer.close()
    server_log.removeHandler(caplog.handler)
    # The server's and ours: asyncio's own may report an earlier test's leftovers here.
    ours = [r for r in caplog.records if r.name.startswith(("uvicorn", "service"))]
    assert not [r for r in ours if r.levelno >= logging.ERROR]
    messages = [r.getMessage() for r in caplog.records]
    assert "change stream ended: the client stopped reading" in messages
