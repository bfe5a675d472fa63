"""Token kinds on the routes they open: API, admin, cron secret, metrics token, webhook secret."""

from __future__ import annotations

import httpx
import pytest

from service.config import Settings
from tests.conftest import app_client
from tests.payloads import SECRET, encode, event, headers

TOKENS = {
    "api_tokens": frozenset({"api"}),
    "admin_tokens": frozenset({"admin"}),
    "cron_secret": "cron",
    "metrics_token": "scraper",
    "webhook_secret": SECRET,
}


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


async def status(http: httpx.AsyncClient, path: str, token: str | None) -> int:
    return (await http.get(path, headers=bearer(token))).status_code


@pytest.mark.parametrize(
    ("path", "opened_by"),
    [
        ("/api/v1/issues/PRJ-1", {"api", "admin"}),
        ("/api/v1/webhooks/dead-letters", {"admin"}),
        ("/api/v1/cron/jira-refresh", {"api", "admin", "cron"}),
        ("/metrics", {"scraper"}),
        ("/openapi.json", {None, "api", "admin", "cron", "scraper", "nope"}),
        ("/healthz", {None, "api", "admin", "cron", "scraper", "nope"}),
    ],
)
async def test_each_token_opens_only_its_routes(db, settings: Settings, path, opened_by) -> None:
    """Each kind of token opens exactly the routes the README's token table gives it."""
    async with app_client(settings, **TOKENS) as http:
        for token in (None, "api", "admin", "cron", "scraper", "nope"):
            answered = await status(http, path, token)
            assert (answered not in (401, 403)) == (token in opened_by), (path, token, answered)


async def test_webhook_takes_its_own_secret_not_a_token(db, settings: Settings) -> None:
    """With every kind of token set, Jira's signed delivery needs no bearer token."""
    body = encode(event())
    async with app_client(settings, **TOKENS) as http:
        response = await http.post("/api/v1/webhooks/jira", content=body, headers=headers(body))
    assert response.status_code == 200


async def test_without_tokens_everything_is_open(db, settings: Settings) -> None:
    """A loopback service without tokens opens every route, dead letters and metrics too."""
    async with app_client(settings) as http:
        for path in ("/api/v1/issues/PRJ-1", "/api/v1/webhooks/dead-letters", "/metrics"):
            assert await status(http, path, None) != 401


async def test_refusal_names_the_token_kind_and_keeps_the_challenge(db, settings) -> None:
    """A refused request says which kind of token opens the route and how to send it."""
    async with app_client(settings, **TOKENS) as http:
        cron = await http.get("/api/v1/cron/jira-refresh", headers=bearer("scraper"))
    assert cron.json()["error"]["code"] == "unauthorized"
    assert "CRON_SECRET" in cron.json()["error"]["message"]
    assert cron.headers["WWW-Authenticate"].startswith("Bearer")
