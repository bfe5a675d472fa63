"""Named clients: the CLI, scopes on routes, subscriptions owned by their client, limits."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.storage import clients
from service.storage.clients import Limits
from tests.conftest import app_client
from tests.live import rewire, serve
from tests.test_changes import eventually

COMMAND = [sys.executable, "-m", "service"]
HOOK = "http://hooks.example.test/in"
OPEN = {"subscription_allowed_hosts": frozenset({"hooks.example.test"}), "clients_reload": 0.05}
TOKENS = {name: f"token-of-{name}-0123456789abcdef" for name in ("reader", "sub", "other", "root")}
SCOPES = {"reader": {"read"}, "sub": {"subscribe"}, "other": {"subscribe"}, "root": {"admin"}}


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [*COMMAND, "client", *args], env=env, capture_output=True, text=True, timeout=60
    )


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
async def made(db: asyncpg.Pool) -> asyncpg.Pool:
    """Four stored clients: a reader, two subscribers, an admin."""
    for name, token in TOKENS.items():
        await clients.add(db, name, SCOPES[name], token)
    return db


@pytest.fixture
async def http(made: asyncpg.Pool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, **OPEN) as client:
        yield client


async def subscribe(http: httpx.AsyncClient, who: str, **more: Any) -> httpx.Response:
    return await http.post("/api/v1/subscriptions", json={"url": HOOK, **more}, headers=bearer(who))


def test_client_add_prints_the_token_once_and_stores_only_its_hash(db, database_url) -> None:
    """`client add` prints a token; list shows the client, never it; the table holds no token."""
    added = cli(database_url, "add", "billing", "--scopes", "read,subscribe")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("jsc_") and len(token) > 40
    listed = cli(database_url, "list")
    assert "billing" in listed.stdout and "read,subscribe" in listed.stdout
    assert token not in listed.stdout + listed.stderr
    again = cli(database_url, "add", "billing", "--scopes", "read")
    assert again.returncode == 1 and "exists" in again.stderr
    wrong = cli(database_url, "add", "x", "--scopes", "read,root")
    assert wrong.returncode == 2 and "scopes are some of" in wrong.stderr


async def test_stored_rows_hold_no_token(db) -> None:
    """Only a SHA-256 of the token reaches the database."""
    await clients.add(db, "billing", {"read"}, "jsc_secret-token-value-abcdefghijklmnop")
    dumped = str([dict(row) for row in await db.fetch("SELECT * FROM clients")])
    assert "secret-token-value" not in dumped


async def test_a_revoked_token_stops_opening_the_api(made, database_url, settings) -> None:
    """After `client revoke`, the running service refuses its token within CLIENTS_RELOAD."""
    async with app_client(settings, **OPEN) as http:
        assert (await http.get("/api/v1/changes", headers=bearer("reader"))).status_code == 200
        revoked = cli(database_url, "revoke", "reader")
        assert revoked.returncode == 0, revoked.stderr

        async def refused() -> bool:
            answer = await http.get("/api/v1/changes", headers=bearer("reader"))
            return answer.status_code == 401

        await eventually(refused)
    assert cli(database_url, "revoke", "reader").returncode == 1
    assert "revoked" in cli(database_url, "list").stdout


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/api/v1/issues/PRJ-1", "read"),
        ("GET", "/api/v1/changes", "read"),
        ("GET", "/api/v1/subscriptions", "subscribe"),
        ("POST", "/api/v1/issues/PRJ-1/refresh", "refresh"),
        ("GET", "/api/v1/cron/jira-refresh", "refresh"),
        ("GET", "/api/v1/webhooks/dead-letters", "admin"),
    ],
)
async def test_each_scope_opens_its_routes_and_admin_all(http, method, path, scope) -> None:
    """A client without the route's scope gets 403 insufficient_scope; admin opens every route."""
    for name, held in SCOPES.items():
        answer = await http.request(method, path, headers=bearer(name))
        opened = scope in held or "admin" in held
        assert (answer.status_code != 403) == opened, (name, answer.status_code)
        if not opened:
            assert answer.json()["error"]["code"] == "insufficient_scope"
            assert repr(scope) in answer.json()["error"]["message"]
    nobody = await http.request(method, path, headers={"Authorization": "Bearer nope"})
    assert nobody.status_code == 401


async def test_env_tokens_keep_their_routes(db, settings) -> None:
    """API_TOKENS still open reads, refreshes and subscriptions; ADMIN_TOKENS the dead letters."""
    env = {"api_tokens": frozenset({"api-1"}), "admin_tokens": frozenset({"adm-1"})}
    async with app_client(settings, **OPEN, **env) as http:
        api, admin = {"Authorization": "Bearer api-1"}, {"Authorization": "Bearer adm-1"}
        assert (await http.get("/api/v1/changes", headers=api)).status_code == 200
        assert (await http.get("/api/v1/subscriptions", headers=api)).status_code == 200
        letters = await http.get("/api/v1/webhooks/dead-letters", headers=api)
        assert letters.status_code == 403
        assert (await http.get("/api/v1/webhooks/dead-letters", headers=admin)).status_code == 200


async def test_a_subscription_is_its_clients_alone(http) -> None:
    """Another client sees 404 for it and an empty list; admin sees and deletes it."""
    created = (await subscribe(http, "sub")).json()
    path = f"/api/v1/subscriptions/{created['id']}"
    assert created["client"] == "sub"
    for method, where in (
        ("GET", path),
        ("DELETE", path),
        ("POST", f"{path}/resume"),
        ("POST", f"{path}/rotate-secret"),
    ):
        answer = await http.request(method, where, headers=bearer("other"))
        assert answer.status_code == 404, (method, where)
        assert answer.json()["error"]["code"] == "subscription_not_found"
    theirs = await http.get("/api/v1/subscriptions", headers=bearer("other"))
    mine = await http.get("/api/v1/subscriptions", headers=bearer("sub"))
    assert theirs.json()["subscriptions"] == [] and len(mine.json()["subscriptions"]) == 1
    everyone = await http.get("/api/v1/subscriptions", headers=bearer("root"))
    assert [s["id"] for s in everyone.json()["subscriptions"]] == [created["id"]]
    assert (await http.delete(path, headers=bearer("root"))).status_code == 204


async def test_a_client_holds_at_most_its_subscriptions(made, settings) -> None:
    """Past CLIENT_MAX_SUBSCRIPTIONS it answers 409 subscription_limit; another client still can."""
    async with app_client(settings, **OPEN, client_max_subscriptions=2) as http:
        assert [(await subscribe(http, "sub")).status_code for _ in range(2)] == [201, 201]
        over = await subscribe(http, "sub")
        assert over.status_code == 409 and over.json()["error"]["code"] == "subscription_limit"
        assert "CLIENT_MAX_SUBSCRIPTIONS" in over.json()["error"]["message"]
        assert (await subscribe(http, "other")).status_code == 201
        listed = await http.get("/api/v1/subscriptions", headers=bearer("sub"))
    assert len(listed.json()["subscriptions"]) == 2


async def test_a_clients_own_limit_overrides_the_default(db, settings) -> None:
    """A client made with its own limit of subscriptions is held to it, not to the default."""
    await clients.add(db, "small", {"subscribe"}, TOKENS["sub"], Limits(subscriptions=1))
    async with app_client(settings, **OPEN) as http:
        assert (await subscribe(http, "sub")).status_code == 201
        assert (await subscribe(http, "sub")).status_code == 409


async def test_making_subscriptions_fast_answers_429(made, settings) -> None:
    """Over CLIENT_SUBSCRIBE_RATE a minute: 429 rate_limited with Retry-After, nothing made."""
    async with app_client(settings, **OPEN, client_subscribe_rate=2) as http:
        answers = [await subscribe(http, "sub") for _ in range(3)]
        listed = await http.get("/api/v1/subscriptions", headers=bearer("sub"))
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].json()["error"]["code"] == "rate_limited"
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert len(listed.json()["subscriptions"]) == 2


async def test_requests_over_a_clients_rate_answer_429(made, settings) -> None:
    """Past CLIENT_RATE (a burst of twice it) a client gets 429; another client does not."""
    async with app_client(settings, **OPEN, client_rate=1) as http:
        codes = [(await http.get("/api/v1/changes", headers=bearer("reader"))).status_code]
        codes += [(await http.get("/api/v1/changes", headers=bearer("reader"))).status_code]
        limited = await http.get("/api/v1/changes", headers=bearer("reader"))
        other = await http.get("/api/v1/subscriptions", headers=bearer("sub"))
    assert codes == [200, 200] and limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited" and "Retry-After" in limited.headers
    assert other.status_code == 200


async def test_a_client_holds_at_most_its_streams(made, settings) -> None:
    """Past CLIENT_MAX_STREAMS a stream answers 429 too_many_streams; a closed one frees a slot."""
    path = "/api/v1/changes/stream"
    async with (
        serve(rewire(settings, **OPEN, client_max_streams=1)) as url,
        httpx.AsyncClient(base_url=url, timeout=15) as http,
    ):
        async with http.stream("GET", path, headers=bearer("reader")) as first:
            assert first.status_code == 200
            second = await http.get(path, headers=bearer("reader"))
            assert second.status_code == 429
            assert second.json()["error"]["code"] == "too_many_streams"
            assert "Retry-After" in second.headers
            other = await http.get("/api/v1/changes", headers=bearer("root"))
            assert other.status_code == 200
        await eventually(lambda: _streams_freed(http))


async def _streams_freed(http: httpx.AsyncClient) -> bool:
    async with http.stream("GET", "/api/v1/changes/stream", headers=bearer("reader")) as again:
        return again.status_code == 200
