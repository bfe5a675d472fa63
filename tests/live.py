"""The service under a real uvicorn server and the Jira simulator, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import uvicorn

from jira_simulator import SimOptions, Simulator
from service.config import JiraSettings, Settings
from service.http.app import create_app
from service.http.server import config as server_config

EMAIL = "cache@example.com"
TOKEN = "jira-token-for-tests"
SECRET = "hook-secret-0123456789"

# A TTL passes: every issue was fetched an hour ago and every tracked key is due.
AGE_BY_A_TTL = (
    "UPDATE issues SET fetched_at = fetched_at - interval '1 hour';"
    " UPDATE tracked SET next_due_at = now()"
)


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
    jira = JiraSettings(
        base_url=sim.base_url,
        flavor=sim.options.flavor,
        email=EMAIL,
        api_token=TOKEN,
        pat=TOKEN,
        backoff_base=0.05,
        backoff_cap=0.5,
        breaker_cool_off=0.2,
    )
    wired = dataclasses.replace(
        settings, jira=jira, webhook_secret=SECRET, poll_interval=0.0, sync_interval=0.0
    )
    return rewire(wired, **changes)


def rewire(settings: Settings, **changes: object) -> Settings:
    """`settings` changed; a `jira_` prefix names a field of its JiraSettings (`jira_pat=`)."""
    nested = {k.removeprefix("jira_"): v for k, v in changes.items() if k.startswith("jira_")}
    own = {k: v for k, v in changes.items() if not k.startswith("jira_")}
    if nested:
        assert settings.jira is not None, "no JiraSettings to change"
        own["jira"] = dataclasses.replace(settings.jira, **nested)  # type: ignore[arg-type]
    return dataclasses.replace(settings, **own)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    """Run the app on a loopback port; answer its base URL."""
    port = free_port()
    # uvicorn binds the port itself: handed a bound socket instead, each request waited
    # 40 ms on loopback (measured), which made the suite slow for nothing.
    config = server_config(
        create_app(settings),
        settings,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
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


async def wait_until(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    """Poll `check` until it holds; fail the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
