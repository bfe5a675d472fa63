"""Webhook group commit on a real PostgreSQL: grouped for speed, yet each answer is durable."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.model import Status
from service.storage import issues as store
from service.storage.inbox import Update
from service.sync.grouped import GroupCommit
from tests.conftest import app_client
from tests.factory import make_issue
from tests.payloads import SECRET, encode, event, headers

PATH = "/api/v1/webhooks/jira"


@pytest.fixture
async def hooks(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, webhook_secret=SECRET) as http:
        yield http


async def post(http: httpx.AsyncClient, payload: dict[str, Any], delivery: str) -> httpx.Response:
    body = encode(payload)
    return await http.post(PATH, content=body, headers=headers(body, delivery))


def updated(minute: int) -> str:
    return f"2026-11-26T05:{minute:02d}:00.000-0600"


async def test_each_grouped_write_is_committed_when_it_answers(db: asyncpg.Pool) -> None:
    """Deliveries arriving together share commits, and each is visible once its write returns."""
    group = GroupCommit(db)
    updates = [
        Update(f"d-{n}", "jira:issue_updated", make_issue(id=n, key=f"PRJ-{n}"))
        for n in range(1, 81)
    ]
    writes = {asyncio.ensure_future(group.write(update)): update for update in updates}
    for done in asyncio.as_completed(list(writes)):
        assert await done == "created"
    async with db.acquire() as other:  # another session sees every write answered
        rows = await other.fetchval("SELECT count(*) FROM issues")
        recorded = await other.fetchval("SELECT count(*) FROM webhook_deliveries")
    assert rows == recorded == 80
    assert 1 <= group.groups < 80 and group.written == 80


async def test_answered_deliveries_are_in_the_database_at_answer_time(hooks, db) -> None:
    """Concurrent deliveries each answer 200 only once another session can read them."""

    async def deliver(n: int) -> None:
        payload = event(id=10_000 + n, key=f"PRJ-{n}", summary=f"hook {n}")
        response = await post(hooks, payload, f"d-{n}")
        assert response.json() == {"outcome": "applied"}
        async with db.acquire() as other:
            summary = await other.fetchval("SELECT summary FROM issues WHERE id = $1", 10_000 + n)
            seen = await other.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE id = $1", f"d-{n}"
            )
        assert (summary, seen) == (f"hook {n}", 1)

    await asyncio.gather(*(deliver(n) for n in range(1, 61)))


async def test_concurrent_deliveries_of_one_issue_leave_the_newest(hooks, db) -> None:
    """40 deliveries of one issue at once, in any order, plus retries: the newest wins."""
    minutes = list(range(40))
    random.Random(3).shuffle(minutes)  # noqa: S311 -- a fixed order, no secret
    payloads = [(f"d-{m}", event(summary=f"edit {m}", updated=updated(m))) for m in minutes]
    retries = payloads[:5]  # Jira retries: the same identifier again, in the same rush
    answers = await asyncio.gather(
        *(post(hooks, payload, delivery) for delivery, payload in [*payloads, *retries])
    )
    outcomes = [answer.json()["outcome"] for answer in answers]
    cached = await store.select_by_key(db, "PRJ-7")
    assert cached is not None and cached.issue.summary == "edit 39"
    assert outcomes[minutes.index(39)] == "applied"
    assert outcomes.count("duplicate") == 5 and set(outcomes) <= {"applied", "stale", "duplicate"}
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 40


async def test_two_workers_grouping_one_issue_write_forward(db: asyncpg.Pool) -> None:
    """Two processes' group commits racing on one issue never let an older write win."""
    workers = [GroupCommit(db), GroupCommit(db)]
    minutes = list(range(60))
    random.Random(5).shuffle(minutes)  # noqa: S311 -- a fixed order, no secret
    writes = [
        workers[n % 2].write(Update(f"d-{m}", "e", make_issue(summary=f"edit {m}", minutes=m)))
        for n, m in enumerate(minutes)
    ]
    outcomes = await asyncio.gather(*writes)
    cached = await store.select_by_key(db, "PRJ-7")
    assert cached is not None and cached.issue.summary == "edit 59"
    assert outcomes[minutes.index(59)] != "stale" and None not in outcomes


async def test_a_delivery_postgresql_refuses_fails_alone(db: asyncpg.Pool) -> None:
    """One write PostgreSQL refuses in a group fails only its own delivery; the rest commit."""
    group = GroupCommit(db)
    bad = dataclasses.replace(make_issue(id=3, key="PRJ-3"), status=Status("1", "x", "bogus"))  # type: ignore[arg-type]
    issues = [make_issue(id=n, key=f"PRJ-{n}") for n in (1, 2)] + [
        bad,
        make_issue(id=4, key="PRJ-4"),
    ]
    writes = [group.write(Update(f"d-{i.id}", "e", i)) for i in issues]
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert outcomes[:2] == ["created", "created"] and outcomes[3] == "created"
    assert isinstance(outcomes[2], asyncpg.CheckViolationError)
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 3
