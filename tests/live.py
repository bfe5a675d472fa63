"""The service under a real uvicorn server and the Jira simulator, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn

from jira_simulator import SimOptions, Simulator
from service.config import Settings
from service.http.app import create_app

EMAIL = "cache@example.com"
TOKEN = "jira-token-for-tests"
SECRET = "hook-secret-0123456789"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test process keeps its own signal handlers.
        yield


def sim_options(**changes: object) -> SimOptions:
    options = SimOptions(email=EMAIL, token=TOKEN, webhook_secret=SECRET, webhook_backoff=0.05)
    return dataclasses.replace(options, **changes)  # type: ignore[arg-type]


def jira_settings(settings: Settings, sim: Simulator, **changes: object) -> Settings:
    """Settings that read from the simulator, poll only when told, and back off briefly."""
    wired = dataclasses.replace(
        settings,
        jira_base_url=sim.base_url,
        jira_flavor=sim.options.flavor,
        jira_email=EMAIL,
        jira_api_token=TOKEN,
        jira_pat=TOKEN,
        webhook_secret=SECRET,
        poll_interval=0.0,
        sync_interval=0.0,
        jira_backoff_base=0.05,
        jira_backoff_cap=0.5,
        jira_breaker_cool_off=0.2,
    )
    return dataclasses.replace(wired, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    """Run the app on a loopback port; answer its base URL."""
    port = free_port()
    # uvicorn binds the port itself: handed a bound socket instead, each request waited
    # 40 ms on loopback (measured), which made the suite slow for nothing.
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
