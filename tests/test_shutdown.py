"""Graceful shutdown of a real `serve` process: SIGTERM in the middle of a webhook burst."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from logging import ERROR

import aiohttp
import asyncpg
import httpx
import pytest
import uvicorn

from jira_simulator import Simulator
from service.cli.serve import serving_app
from service.config import Settings
from service.storage import tracking
from tests.conftest import app_client
from tests.live import EMAIL, SECRET, TOKEN, _Server, free_port, jira_settings, wait_until
from tests.payloads import encode, event, headers
from tests.pgproxy import PgProxy

BURST = 500
# What asyncpg sends last when it closes a connection properly: Terminate ('X', length 4).
TERMINATE = b"X\x00\x00\x00\x04"
# A CancelRequest (length 16, code 80877102) comes on a connection of its own, which ends
# without a Terminate by the protocol's design: asyncpg opens one to cancel a query.
CANCEL_REQUEST = b"\x00\x00\x00\x10\x04\xd2\x16\x2e"
LEASED = "SELECT count(*) > 0 FROM tracked WHERE lease_owner IS NOT NULL"


class TerminateWatch(PgProxy):
    """A proxy that keeps the last bytes each client sent, to tell a close from a drop."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.tails: list[bytes] = []
        self.heads: list[bytes] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await self._connect_upstream()
        self.tails.append(b"")
        self.heads.append(b"")
        pipes = [
            asyncio.create_task(self._pump(reader, upstream_writer, len(self.tails) - 1)),
            asyncio.create_task(self._pump(upstream_reader, writer, None)),
        ]
        self.pipes.update(pipes)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tail: int | None
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if tail is not None:
                    self.tails[tail] = (self.tails[tail] + data)[-len(TERMINATE) :]
                    self.heads[tail] = (self.heads[tail] + data)[: len(CANCEL_REQUEST)]
                writer.write(data)
                await writer.drain()
        writer.close()


async def deliver(http: aiohttp.ClientSession, url: str, number: int, accepted: list[int]) -> None:
    body = encode(event(id=900000 + number, key=f"BURST-{number}"))
    with contextlib.suppress(aiohttp.ClientError):
        async with http.post(url, data=body, headers=headers(body, f"burst-{number}")) as reply:
            if reply.status == 200:
                accepted.append(number)


async def answers(url: str) -> bool:
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(url)).status_code == 200
        except httpx.TransportError:
            return False


async def test_sigterm_mid_burst_keeps_every_accepted_delivery(
    db: asyncpg.Pool, database_url: str, sim: Simulator
) -> None:
    """Each 200 is stored; serve exits 0 in time, with no lease left and its pool closed."""
    # The poller reads a slow Jira in small batches, so SIGTERM finds it holding a lease.
    await tracking.track(db, sim.seed(1000))
    sim.options.latency = 0.2
    proxy = TerminateWatch(database_url)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": await proxy.start(),
        "PORT": str(port),
        "JIRA_BASE_URL": sim.base_url,
        "JIRA_EMAIL": EMAIL,
        "JIRA_API_TOKEN": TOKEN,
        "JIRA_WEBHOOK_SECRET": SECRET,
        "JIRA_POLL_INTERVAL": "1",
        "JIRA_POLL_BATCH_SIZE": "20",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}/api/v1/webhooks/jira"
    accepted: list[int] = []

    async def some_accepted() -> bool:
        return len(accepted) >= 20

    async def holds_a_lease() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"serve exited: {(await process.communicate())[1].decode()}")
        return bool(await db.fetchval(LEASED))

    try:
        # Generous bounds: on a loaded machine serve may take long to start; nothing here
        # depends on how fast it is, only on the order of what happens.
        await wait_until(holds_a_lease, 120)
        await wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 120)
        async with aiohttp.ClientSession() as http:
            numbers = range(1, BURST + 1)
            burst = [asyncio.create_task(deliver(http, url, n, accepted)) for n in numbers]
            await wait_until(some_accepted, 120)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.gather(*burst)
        _, errors = await asyncio.wait_for(process.communicate(), 120)
        took = time.monotonic() - signalled
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.gather(*proxy.pipes)
        await proxy.cut()
    stored = await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE id = ANY($1::text[])",
        [f"burst-{n}" for n in accepted],
    )
    issues = await db.fetchval(
        "SELECT count(*) FROM issues WHERE id = ANY($1::bigint[])",
        [900000 + n for n in accepted],
    )
    # Within the 30 s stop window the README asks for (compose's stop_grace_period).
    assert process.returncode == 0 and took < 30, errors.decode()
    assert 20 <= len(accepted) < BURST, "SIGTERM should land in the middle of the burst"
    assert stored == issues == len(accepted)
    assert await db.fetchval(LEASED) is False
    dropped = [
        (head, tail)
        for head, tail in zip(proxy.heads, proxy.tails, strict=True)
        if tail != TERMINATE and head != CANCEL_REQUEST
    ]
    assert proxy.tails and dropped == []


async def test_shutdown_mid_poll_logs_no_error(
    db: asyncpg.Pool, settings: Settings, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping while a poll cycle runs logs no error, and the cycle leaves no lease."""
    await tracking.track(db, sim.seed(50))
    sim.options.latency = 0.3
    # The scheduler's first poll runs at once; the interval only sets the next one.
    async with app_client(jira_settings(settings, sim, poll_interval=60, poll_batch_size=10)):
        await wait_until(lambda: db.fetchval(LEASED))
    assert not await db.fetchval(LEASED)
    assert [record.getMessage() for record in caplog.records if record.levelno >= ERROR] == []


async def test_request_cut_by_the_grace_answers_json_503(
    db: asyncpg.Pool, settings: Settings, sim: Simulator
) -> None:
    """A read still waiting on Jira when the grace ends answers 503 shutting_down, in JSON."""
    sim.options.latency = 2.0
    wired = jira_settings(settings, sim, read_timeout=60.0)
    port = free_port()
    config = uvicorn.Config(
        serving_app(wired),
        host="127.0.0.1",
        port=port,
        log_level="critical",
        lifespan="on",
        timeout_graceful_shutdown=0.2,
    )
    server = _Server(config)

    async def started() -> bool:
        return server.started

    async def in_flight() -> bool:
        return bool(server.server_state.tasks)

    running = asyncio.create_task(server.serve())
    await wait_until(started)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        read = asyncio.create_task(http.get("/api/v1/issues/ALPHA-404"))
        await wait_until(in_flight)
        server.should_exit = True
        answer = await read
    await running
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.json()["error"]["code"] == "shutting_down"
