"""Shared fixtures: a real PostgreSQL database per session and the app over ASGI."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from jira_simulator import Simulator
from service.config import Settings
from service.http.app import create_app
from service.storage.embedded import start_embedded
from service.storage.migrate import apply_migrations
from service.storage.pool import open_pool
from tests.bouncer import Bouncer
from tests.live import jira_settings, rewire, serve, sim_options

ROOT = Path(__file__).resolve().parent.parent
TABLES = [
    "issues",
    "issue_keys",
    "links",
    "tracked",
    "missing_keys",
    "webhook_deliveries",
    "dead_letters",
    "schedule_basis",
    "sync_projects",
    "subscriptions",
    "clients",
    "webhook_registration",
]


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """TEST_DATABASE_URL, or an embedded server in a temporary directory."""
    configured = os.environ.get("TEST_DATABASE_URL")
    # The embedded server is kept between runs; each session gets its own database.
    return configured or start_embedded(ROOT / ".data" / "test")


@pytest.fixture(scope="session")
async def database_url(server_dsn: str) -> AsyncIterator[str]:
    """A fresh database for this test session, migrated, dropped at the end."""
    name = f"jsc_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_database(server_dsn, name)
    connection = await asyncpg.connect(dsn)
    await apply_migrations(connection)
    await connection.close()
    yield dsn
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
def bouncer(server_dsn: str) -> Iterator[Bouncer | None]:
    """With TEST_PGBOUNCER=1 (`make test-pgbouncer`), a PgBouncer in transaction mode in front
    of the test server, which the pool and the app's DATABASE_URL then go through."""
    if os.environ.get("TEST_PGBOUNCER") != "1":
        yield None
        return
    started = Bouncer(server_dsn).start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def pooled_url(database_url: str, bouncer: Bouncer | None) -> str:
    """The session database as queries reach it: through PgBouncer when it runs, else direct."""
    return bouncer.through(database_url) if bouncer else database_url


@pytest.fixture(scope="session")
async def pool(pooled_url: str, bouncer: Bouncer | None) -> AsyncIterator[asyncpg.Pool]:
    created = await open_pool(pooled_url, min_size=1, max_size=10, pooled=bouncer is not None)
    yield created
    await created.close()


@pytest.fixture
async def db(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The session pool over empty tables: each test starts from nothing."""
    await pool.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    return pool


@pytest.fixture
def settings(database_url: str, pooled_url: str, bouncer: Bouncer | None) -> Settings:
    """The app's database settings: through PgBouncer (listening directly) when it runs."""
    if bouncer is None:
        return Settings(database_url=database_url)
    return Settings(
        database_url=pooled_url, database_listen_url=database_url, database_pooler="transaction"
    )


@pytest.fixture
async def client(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over the real app, its lifespan run."""
    async with app_client(settings) as http:
        yield http


def app_client(settings: Settings, **changes: object) -> _AppClient:
    return _AppClient(rewire(settings, **changes))


class _AppClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __aenter__(self) -> httpx.AsyncClient:
        self.manager = LifespanManager(create_app(self.settings))
        await self.manager.__aenter__()
        transport = httpx.ASGITransport(app=self.manager.app)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://cache.test")
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.manager.__aexit__(*exc)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A Jira simulator that checks our credentials and signs its webhooks."""
    async with Simulator(sim_options()) as simulator:
        yield simulator


@pytest.fixture
async def service(db: asyncpg.Pool, settings: Settings, sim: Simulator) -> AsyncIterator[str]:
    """The service over real HTTP, reading from the simulator, its webhooks pointed at it."""
    async with serve(jira_settings(settings, sim)) as url:
        sim.options.webhook_url = f"{url}/api/v1/webhooks/jira"
        yield url
