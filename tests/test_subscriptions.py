"""Subscriptions: routes, signed deliveries, retries, pauses, independence, replicas, filters."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web

from service.config import Settings
from service.storage import changes, links
from service.storage import issues as store
from service.storage.changes import Filter
from tests.conftest import app_client
from tests.factory import DONE, make_issue
from tests.live import free_port
from tests.test_changes import eventually

FAST = {
    "subscription_allowed_hosts": frozenset({"127.0.0.1:*", "*.example.test"}),
    "subscription_backoff": 0.01,
    "subscription_lease": 1.0,
}


@dataclass
class Received:
    delivery_id: str
    signature: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def entry(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A subscriber on loopback: answers the scripted statuses first (a 2xx one takes the
    entry), then 204 (or hangs)."""

    url: str = ""
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hang: bool = False
    taken: list[Received] = field(default_factory=list)  # answered 2xx
    attempts: int = 0
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            body = await request.read()
            await asyncio.sleep(0)  # let another sender in, if one were sending
            if self.hang:
                await asyncio.Event().wait()
            status = 204
            if self.script:
                status, scripted = self.script.pop(0)
                if status >= 300:
                    return web.Response(status=status, headers=scripted)
            headers = request.headers
            signature, delivery_id = headers["X-Hub-Signature"], headers["X-Delivery-Id"]
            self.taken.append(Received(delivery_id, signature, body, dict(headers)))
            return web.Response(status=status)
        finally:
            self.in_flight -= 1

    def keys(self) -> list[str]:
        return [received.entry["key"] for received in self.taken]


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
async def fresh(db: asyncpg.Pool) -> asyncpg.Pool:
    """Empty tables and an empty change log."""
    await db.execute("TRUNCATE changes")
    await db.execute("UPDATE changes_pruned SET txid = '0', position = 0")
    return db


@pytest.fixture
async def http(fresh: asyncpg.Pool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, **FAST) as client:
        yield client


async def subscribe(http: httpx.AsyncClient, url: str, **more: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/subscriptions", json={"url": url, **more})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def write(pool: asyncpg.Pool, *keys: str, minutes: float = 0, **fields: Any) -> None:
    """Cache (or change) one issue per key, ids from the key's number."""
    issues = [make_issue(id=int(k.split("-")[1]), key=k, minutes=minutes, **fields) for k in keys]
    await store.upsert_issues(pool, issues, "poll")


async def logged(pool: asyncpg.Pool) -> list[str]:
    """The cursors of every entry in the log (once all are readable)."""
    await eventually(lambda: changes.settled(pool))
    page = await changes.read_changes(pool, await changes.first_cursor(pool), Filter(), 1000)
    return [change.cursor.encode() for change in page.changes]


async def status(http: httpx.AsyncClient, subscription: dict[str, Any]) -> dict[str, Any]:
    return dict((await http.get(f"/api/v1/subscriptions/{subscription['id']}")).json())


# The routes


async def test_created_subscription_shows_its_secret_once(http) -> None:
    """POST answers 201 with the secret; list and GET never show it; DELETE removes it."""
    created = await subscribe(http, "http://hooks.example.test/in", keys=["prj-1"])
    assert len(created["secret"]) >= 32 and created["keys"] == ["PRJ-1"]
    listed = (await http.get("/api/v1/subscriptions")).json()["subscriptions"]
    shown = await status(http, created)
    assert [s["id"] for s in listed] == [created["id"]]
    assert created["secret"] not in json.dumps(listed) + json.dumps(shown)
    assert shown["lag"] == {"entries": 0, "seconds": 0} and shown["paused"] is False
    deleted = await http.delete(f"/api/v1/subscriptions/{created['id']}")
    again = await http.get(f"/api/v1/subscriptions/{created['id']}")
    assert deleted.status_code == 204 and again.status_code == 404
    assert again.json()["error"]["code"] == "subscription_not_found"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://hooks.example.test/in", "invalid_url"),
        ("hooks.example.test/in", "invalid_url"),
        ("http://user:pw@hooks.example.test/in", "invalid_url"),
        ("http://169.254.169.254/latest/meta-data", "host_not_allowed"),
        ("https://example.test.evil.com/", "host_not_allowed"),
    ],
)
async def test_urls_not_http_or_not_allowed_are_refused(http, url, code) -> None:
    """A URL not http(s), or to a host not allow-listed, answers 400 and saves nothing."""
    response = await http.post("/api/v1/subscriptions", json={"url": url})
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert (await http.get("/api/v1/subscriptions")).json()["subscriptions"] == []


DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(
    ("body", "code", "named"),
    [
        (DEEP, "invalid_body", "the body"),
        ('{"url": "http://127.0.0.1/", "keys": ' + DEEP + "}", "invalid_key", "keys[0]"),
        (
            '{"url": "http://127.0.0.1/", "fields": ["status", {"a": 1}]}',
            "invalid_body",
            "fields[1]",
        ),
        ('{"url": "http://127.0.0.1/", "fields": [["status"]]}', "invalid_body", "fields[0]"),
        ('{"url": "http://127.0.0.1/", "fields": ["colour"]}', "invalid_body", "fields[0]"),
        ('{"url": "http://127.0.0.1/", "project_id": 7}', "invalid_project_id", "project_id"),
        ('{"url": ["http://127.0.0.1/"]}', "invalid_url", "url"),
        ('{"url": "http://127.0.0.1/", "extra": ' + DEEP + "}", "invalid_body", "extra"),
        ('{"url": "http://127.0.0.1/"', "invalid_body", "not JSON"),
    ],
)
async def test_a_body_that_does_not_fit_answers_400_naming_the_member(
    http, body, code, named
) -> None:
    """Deep nesting, wrong types and unknown members answer 400 naming the member, never 500."""
    response = await http.post(
        "/api/v1/subscriptions", content=body, headers={"Content-Type": "application/json"}
    )
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == code and named in error["message"]
    assert (await http.get("/api/v1/subscriptions")).json()["subscriptions"] == []


async def test_without_allowed_hosts_no_subscription_can_be_created(fresh, settings) -> None:
    """Unset SUBSCRIPTION_ALLOWED_HOSTS refuses every subscription, naming the setting."""
    async with app_client(settings) as http:
        response = await http.post("/api/v1/subscriptions", json={"url": "http://127.0.0.1/"})
    assert response.status_code == 400
    assert "SUBSCRIPTION_ALLOWED_HOSTS" in response.json()["error"]["message"]


# Deliveries


async def test_each_delivery_is_signed_over_its_raw_body(http, fresh) -> None:
    """X-Hub-Signature is the HMAC-SHA256 of the raw body with the secret; the body is the entry."""
    async with receiving(Receiver()) as receiver:
        created = await subscribe(http, receiver.url)
        await write(fresh, "PRJ-1")
        await eventually(lambda: _true(len(receiver.taken) == 1))
    received = receiver.taken[0]
    expected = hmac.new(created["secret"].encode(), received.body, hashlib.sha256).hexdigest()
    assert received.signature == f"sha256={expected}"
    assert received.delivery_id == f"{created['id']}:{received.entry['cursor']}"
    assert received.entry["key"] == "PRJ-1" and received.entry["fields"]["state"] == [None, "ok"]


async def test_a_subscriber_failing_for_a_while_gets_every_change_once_in_order(
    http, fresh
) -> None:
    """500s, then a 429 with Retry-After, then OK: every entry arrives once, in log order."""
    script = [(500, {}), (503, {}), (500, {}), (429, {"Retry-After": "0"}), (502, {})]
    async with receiving(Receiver(script=list(script))) as receiver:
        await subscribe(http, receiver.url)
        for minute in range(4):
            status_now = DONE if minute % 2 else None
            await write(fresh, "PRJ-1", "PRJ-2", minutes=minute, status=status_now)
        expected = await logged(fresh)
        await eventually(lambda: _true(len(receiver.taken) == len(expected)))
    ids = [received.delivery_id for received in receiver.taken]
    assert len(set(ids)) == len(ids) and receiver.attempts == len(expected) + len(script)
    scraped = (await http.get("/metrics")).text
    assert 'jsc_subscription_deliveries_total{outcome="retried"} 5.0' in scraped
    assert f'jsc_subscription_deliveries_total{{outcome="delivered"}} {len(expected)}.0' in scraped
    assert [received.entry["cursor"] for received in receiver.taken] == expected


async def test_a_dead_subscriber_does_not_delay_a_healthy_one(http, fresh) -> None:
    """While one subscriber never answers, another receives every change."""
    async with (
        receiving(Receiver(hang=True)) as dead,
        receiving(Receiver()) as healthy,
    ):
        await subscribe(http, dead.url)
        await subscribe(http, healthy.url)
        for minute in range(3):
            await write(fresh, "PRJ-1", minutes=minute, summary=f"S{minute}")
        expected = await logged(fresh)
        await eventually(lambda: _true(len(healthy.taken) == len(expected)))
        await eventually(lambda: _true(dead.in_flight == 1))  # its POST may start later
        assert dead.taken == []


async def test_a_subscriber_failing_past_the_bound_is_paused_until_resumed(fresh, settings) -> None:
    """After SUBSCRIPTION_PAUSE_AFTER of failures it pauses, says why, and resume delivers all."""
    async with (
        app_client(settings, **FAST, subscription_pause_after=0.2) as http,
        receiving(Receiver(script=[(500, {})] * 10_000)) as receiver,
    ):
        created = await subscribe(http, receiver.url)
        await write(fresh, "PRJ-1", "PRJ-2")
        await eventually(lambda: _paused(http, created))
        shown = await status(http, created)
        assert "failing for over 0.2 s" in shown["paused_reason"]
        assert shown["last_error"] == "answered 5xx" and shown["lag"]["entries"] == 2
        receiver.script.clear()
        resumed = await http.post(f"/api/v1/subscriptions/{created['id']}/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        await eventually(lambda: _true(len(receiver.taken) == 2))
        # The receiver has the entry before the cursor moves past it.
        await eventually(lambda: _delivered(http, created, 2))
        shown = await status(http, created)
    assert receiver.keys() == ["PRJ-1", "PRJ-2"] and shown["delivered"] == 2
    assert shown["last_success_at"] is not None and shown["lag"]["entries"] == 0


async def test_a_refusing_subscriber_is_paused_at_once(http, fresh) -> None:
    """A 4xx that is not retried (410) pauses the subscription with the answer as the reason."""
    async with receiving(Receiver(script=[(410, {})])) as receiver:
        created = await subscribe(http, receiver.url)
        await write(fresh, "PRJ-1")
        await eventually(lambda: _paused(http, created))
    shown = await status(http, created)
    assert receiver.attempts == 1 and "answered 4xx" in shown["paused_reason"]


async def test_what_was_answered_before_a_pause_is_not_sent_again(http, fresh) -> None:
    """The cursor, stored in batches while entries flow, is stored when a refusal pauses the
    subscription: resumed, it sends only what the subscriber has not taken."""
    async with receiving(Receiver(script=[(204, {}), (410, {})])) as receiver:
        created = await subscribe(http, receiver.url)
        await write(fresh, "PRJ-1", "PRJ-2")
        await eventually(lambda: _paused(http, created))
        shown = await status(http, created)
        assert shown["delivered"] == 1 and shown["lag"]["entries"] == 1
        resumed = await http.post(f"/api/v1/subscriptions/{created['id']}/resume")
        assert resumed.status_code == 200
        await eventually(lambda: _true(len(receiver.taken) == 2))
    assert receiver.keys() == ["PRJ-1", "PRJ-2"] and receiver.attempts == 3


async def test_two_replicas_deliver_everything_once_never_concurrently(fresh, settings) -> None:
    """Two apps on one database: each entry reaches each subscriber once, one POST at a time."""
    async with (
        app_client(settings, **FAST) as first,
        app_client(settings, **FAST) as second,
        receiving(Receiver()) as a,
        receiving(Receiver()) as b,
        receiving(Receiver()) as c,
    ):
        for http, receiver in ((first, a), (second, b), (first, c)):
            await subscribe(http, receiver.url)
        for minute in range(5):
            await write(fresh, "PRJ-1", "PRJ-2", "PRJ-3", minutes=minute, summary=f"S{minute}")
        expected = await logged(fresh)
        for receiver in (a, b, c):
            await eventually(lambda r=receiver: _true(len(r.taken) >= len(expected)))
    for receiver in (a, b, c):
        ids = Counter(received.delivery_id for received in receiver.taken)
        assert max(ids.values()) == 1 and receiver.most_in_flight == 1
        assert [received.entry["cursor"] for received in receiver.taken] == expected


async def test_filters_pick_projects_keys_and_fields(http, fresh) -> None:
    """project_id follows the links, keys those issues, fields the entries touching them."""
    await links.link(fresh, "checkout", "PRJ-1")
    async with (
        receiving(Receiver()) as project,
        receiving(Receiver()) as keyed,
        receiving(Receiver()) as status_only,
    ):
        await subscribe(http, project.url, project_id="checkout")
        await subscribe(http, keyed.url, keys=["PRJ-2"])
        await subscribe(http, status_only.url, fields=["status"])
        await write(fresh, "PRJ-1", "PRJ-2", "PRJ-3")
        await write(fresh, "PRJ-1", "PRJ-2", minutes=1, summary="renamed")
        await write(fresh, "PRJ-3", minutes=2, status=DONE)
        expected = await logged(fresh)
        await eventually(lambda: _caught_up(http, 3, expected[-1]))
    assert project.keys() == ["PRJ-1", "PRJ-1"] and keyed.keys() == ["PRJ-2", "PRJ-2"]
    assert status_only.keys() == ["PRJ-1", "PRJ-2", "PRJ-3", "PRJ-3"]


async def _delivered(http: httpx.AsyncClient, subscription: dict[str, Any], count: int) -> bool:
    return bool((await status(http, subscription))["delivered"] == count)


async def _paused(http: httpx.AsyncClient, subscription: dict[str, Any]) -> bool:
    return bool((await status(http, subscription))["paused"])


async def _caught_up(http: httpx.AsyncClient, count: int, last: str) -> bool:
    listed = (await http.get("/api/v1/subscriptions")).json()["subscriptions"]
    return len(listed) == count and all(s["cursor"] >= last for s in listed)


async def _delivered(http: httpx.AsyncClient, subscription: dict[str, Any], count: int) -> bool:
    return bool((await status(http, subscription))["delivered"] == count)


async def _true(value: bool) -> bool:
    return value


async def test_a_killed_replicas_subscription_is_taken_over_from_its_cursor(
    fresh, settings, caplog
) -> None:
    """A lease left by a dead replica expires; another replica then delivers every entry once,
    and logs that it took the subscription over from the dead owner."""
    async with receiving(Receiver()) as receiver:
        async with app_client(settings, **FAST, subscriptions_deliver=False) as http:
            created = await subscribe(http, receiver.url)
        await fresh.execute(
            "UPDATE subscriptions SET lease_owner = 'killed:1',"
            " lease_until = now() + interval '0.5 seconds'"
        )
        await write(fresh, "PRJ-1", "PRJ-2")
        with caplog.at_level(logging.WARNING, logger="service.sync.leases"):
            async with app_client(settings, **FAST) as http:
                await eventually(lambda: _true(len(receiver.taken) == 2))
                owner = await fresh.fetchval("SELECT lease_owner FROM subscriptions")
        assert owner != "killed:1"
        taken = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
        assert len(taken) == 1 and f"subscriptions {created['id']} from killed:1" in taken[0]
    assert [r.delivery_id.split(":")[0] for r in receiver.taken] == [created["id"]] * 2
    assert receiver.keys() == ["PRJ-1", "PRJ-2"]


async def test_a_stopping_replica_hands_its_leases_back(fresh, settings) -> None:
    """On shutdown a replica releases its subscriptions, so another takes them at once."""
    async with receiving(Receiver()) as receiver, app_client(settings, **FAST) as http:
        await subscribe(http, receiver.url)
        await eventually(lambda: _leased(fresh))
    assert not await _leased(fresh)


async def _leased(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT bool_or(lease_owner IS NOT NULL) FROM subscriptions"))
