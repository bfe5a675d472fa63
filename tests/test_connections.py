"""Slow, abandoned and malformed requests, over real sockets against a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from service.config import Settings
from tests.live import serve

SLOW = 300  # connections at once, as the trial held


@pytest.fixture(autouse=True)
async def _empty(db):
    """Every table emptied first: a client left by another test would close the API."""
    return db


@contextlib.asynccontextmanager
async def address(settings: Settings) -> AsyncIterator[tuple[str, int, str]]:
    async with serve(settings) as url:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        yield parts.hostname, parts.port, url


async def trickle(host: str, port: int, head: bytes, body_every: float) -> bytes:
    """Send `head`, then a byte every `body_every` s until the server answers or closes."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(head)
    answer = b""
    try:
        while not answer:
            try:
                answer = await asyncio.wait_for(reader.read(65536), body_every)
            except TimeoutError:
                pass
            except ConnectionError:
                return b""  # closed without a word, our last bytes unread
            else:
                if not answer:
                    return b""  # closed without a word
            with contextlib.suppress(ConnectionError):
                writer.write(b"x")
                await writer.drain()
        with contextlib.suppress(ConnectionError):  # our bytes sent meanwhile stay unread
            answer += await reader.read()
        return answer
    finally:
        writer.close()


def status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return status, json.loads(body)


async def test_connections_trickling_their_headers_are_closed(settings: Settings) -> None:
    """300 connections sending a header byte at a time are closed after HEADER_TIMEOUT."""
    quick = dataclasses.replace(settings, header_timeout=0.5)
    async with address(quick) as (host, port, url):
        head = b"GET /healthz HTTP/1.1\r\nHost: cache\r\nX-Slow: "
        async with asyncio.timeout(60):
            answers = await asyncio.gather(*(trickle(host, port, head, 0.1) for _ in range(SLOW)))
        assert answers == [b""] * SLOW
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_bodies_trickling_in_answer_408_json(settings: Settings) -> None:
    """300 bodies announced as 1 MB and sent a byte at a time answer 408 body_timeout."""
    quick = dataclasses.replace(settings, body_timeout=0.5)
    async with address(quick) as (host, port, url):
        head = (
            b"POST /api/v1/subscriptions HTTP/1.1\r\nHost: cache\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        )
        async with asyncio.timeout(60):
            answers = await asyncio.gather(*(trickle(host, port, head, 0.1) for _ in range(SLOW)))
        for answer in answers:
            status, body = status_and_body(answer)
            assert status == 408 and body["error"]["code"] == "body_timeout"  # type: ignore[index]
        async with httpx.AsyncClient(base_url=url) as http:
            text = (await http.get("/metrics")).text
        assert f'jsc_http_abandoned_total{{reason="body_timeout"}} {SLOW}.0' in text


async def test_an_answer_before_the_body_closes_the_connection(settings: Settings) -> None:
    """A 401 given before a slow upload's body arrived closes the connection: a caller with no
    token cannot hold connections open by trickling bodies the API never reads."""
    closed = dataclasses.replace(settings, api_tokens=frozenset({"the-token"}))
    async with address(closed) as (host, port, _):
        head = (
            b"POST /api/v1/subscriptions HTTP/1.1\r\nHost: cache\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        )
        async with asyncio.timeout(60):  # trickle returns once the server closed
            answers = await asyncio.gather(*(trickle(host, port, head, 0.1) for _ in range(20)))
    for answer in answers:
        status, _ = status_and_body(answer)
        assert status == 401 and b"connection: close" in answer.lower()


async def test_a_client_gone_mid_body_is_logged_at_info_and_counted_not_500(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook whose sender hangs up mid-body is an info line and a 499 count, not a 500."""
    hooked = dataclasses.replace(settings, webhook_secret="hook-secret")
    caplog.set_level(logging.INFO)
    async with address(hooked) as (host, port, url):
        _, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /api/v1/webhooks/jira HTTP/1.1\r\nHost: cache\r\n"
            b"Content-Length: 3000\r\n\r\n" + b'{"webhookEvent": "jira:issue_updated"'
        )
        await writer.drain()
        writer.close()
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(500):
                text = (await http.get("/metrics")).text
                if 'jsc_http_abandoned_total{reason="client_gone"} 1.0' in text:
                    break
                await asyncio.sleep(0.02)
    assert 'jsc_http_abandoned_total{reason="client_gone"} 1.0' in text
    assert 'status="500"' not in text and 'status="499"' in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(r.getMessage() == "client went away mid-request" for r in caplog.records)


@pytest.mark.parametrize(
    ("request_head", "status", "code"),
    [
        (
            b"GET /api/v1/issues/" + b"A" * 17000 + b" HTTP/1.1\r\nHost: c\r\n\r\n",
            414,
            "uri_too_long",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: c\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request"),
    ],
)
async def test_requests_uvicorn_cannot_take_answer_json(
    settings: Settings, request_head: bytes, status: int, code: str
) -> None:
    """A URL over 16 KiB, headers over 64 KiB, or no HTTP at all answer JSON, like every error."""
    async with address(settings) as (host, port, _):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request_head)
        async with asyncio.timeout(15):
            answer = await reader.read()
        writer.close()
    found, body = status_and_body(answer)
    assert found == status and body["error"]["code"] == code  # type: ignore[index]


@pytest.mark.parametrize("path", ["/healthz/", "/api/v1/issues/PRJ-1/", "/api/v1/changes/"])
async def test_a_trailing_slash_answers_404_json_without_a_location(
    client: httpx.AsyncClient, path: str
) -> None:
    """A stray trailing slash is a JSON 404, never a redirect built from the Host header."""
    response = await client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error"]["code"] == "not_found"


async def test_a_request_leaves_no_reference_cycle_behind(settings: Settings) -> None:
    """What serving a request allocates is freed by reference counting when it ends, so the
    garbage collector finds nothing: its full passes were GET's p99 (bench/README.md)."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    def cycles() -> int:
        return sum(isinstance(o, RequestResponseCycle) for o in gc.get_objects())

    async with serve(settings) as url, httpx.AsyncClient(base_url=url) as client:
        gc.collect()
        gc.disable()  # what a cycle would keep stays countable
        try:
            before = cycles()
            for _ in range(20):
                assert (await client.get("/readyz")).status_code == 200
            left = cycles() - before
        finally:
            gc.enable()
    # One: the connection's protocol holds its last request until the next one.
    assert left <= 1


async def test_serve_freezes_the_start_up_heap_once_every_service_is_built(
    settings: Settings,
) -> None:
    """`serve`'s app hands what start-up built to gc.freeze, so that full passes skip it; the
    hook runs once, when every service exists, before the first request."""
    from asgi_lifespan import LifespanManager

    from service.cli.serve import serving_app
    from service.http.app import create_app

    seen: list[int] = []
    app = create_app(settings, started=lambda: seen.append(len(seen)))
    async with LifespanManager(app) as manager:
        assert seen == [0]
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://t"
        ) as client:
            assert (await client.get("/readyz")).status_code == 200
    assert seen == [0]
    assert gc.get_freeze_count() == 0
    try:
        async with LifespanManager(serving_app(settings)):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
