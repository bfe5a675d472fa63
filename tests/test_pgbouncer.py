"""The service through a real PgBouncer in transaction mode, configured as it ships.

`make test-pgbouncer` runs these and the feature suites (webhooks, memo, sync, poller, change
feed, subscriptions, migrations) with the app's DATABASE_URL through PgBouncer; here each test
also starts one of its own when the run has none, so the plain suite proves them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from service.config import Settings
from service.storage import issues as store
from service.storage import migrate
from service.storage.pool import DatabaseUnavailableError
from tests.bouncer import Bouncer, installed
from tests.conftest import _with_database, app_client
from tests.factory import make_issue

pytestmark = pytest.mark.skipif(
    installed() is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)


@pytest.fixture(scope="module")
def pgbouncer(server_dsn: str, bouncer: Bouncer | None) -> Iterator[Bouncer]:
    if bouncer is not None:
        yield bouncer
        return
    own = Bouncer(server_dsn).start()
    yield own
    own.stop()


@pytest.fixture
async def empty_dsn(server_dsn: str) -> AsyncIterator[str]:
    name = f"jsc_bouncer_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(server_dsn, name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


def through(pgbouncer: Bouncer, direct: str) -> Settings:
    return Settings(
        database_url=pgbouncer.through(direct),
        database_listen_url=direct,
        database_pooler="transaction",
    )


async def test_replicas_start_together_through_pgbouncer(pgbouncer: Bouncer, empty_dsn) -> None:
    """Three replicas starting at once through PgBouncer migrate an empty database once."""
    settings = through(pgbouncer, empty_dsn)
    async with contextlib.AsyncExitStack() as stack:
        apps = await asyncio.gather(
            *(stack.enter_async_context(app_client(settings)) for _ in "abc")
        )
        answers = await asyncio.gather(*(http.get("/readyz") for http in apps))
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    connection = await asyncpg.connect(empty_dsn)
    try:
        applied = await connection.fetchval("SELECT count(*) FROM schema_migrations")
        locks = await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
    finally:
        await connection.close()
    assert applied == len(migrate.known_versions()) and locks == 0


async def test_many_reads_at_once_through_pgbouncer(pgbouncer: Bouncer, database_url, db) -> None:
    """Concurrent reads and writes through PgBouncer never meet another client's statements."""
    issues = [make_issue(id=n, key=f"PRJ-{n}") for n in range(1, 41)]
    await store.upsert_issues(db, issues, "poll")
    settings = through(pgbouncer, database_url)
    async with app_client(settings, memo_size=0) as http:
        answers = await asyncio.gather(
            *(http.get(f"/api/v1/issues/{issue.key}") for issue in issues * 3),
            *(http.put(f"/api/v1/projects/p{issue.id}/jira/{issue.key}") for issue in issues),
        )
    assert [answer.status_code for answer in answers[:120]] == [200] * 120
    assert [answer.json()["key"] for answer in answers[:40]] == [issue.key for issue in issues]
    assert {answer.status_code for answer in answers[120:]} <= {200, 201}


async def test_a_refusal_by_pgbouncer_names_its_reason(pgbouncer: Bouncer, database_url) -> None:
    """When PgBouncer refuses the connection, starting fails with PgBouncer's own words."""
    # A startup parameter PgBouncer does not pass on, as the pool once sent plan_cache_mode.
    refused = pgbouncer.through(database_url) + "&plan_cache_mode=force_generic_plan"
    settings = Settings(database_url=refused, database_listen_url=database_url)
    with pytest.raises(
        DatabaseUnavailableError, match="said: unsupported startup parameter: plan_cache_mode"
    ):
        async with app_client(settings, database_pooler="transaction"):
            pass
