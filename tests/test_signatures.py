"""Deliveries signed per Standard Webhooks, verified by its own library; replays; rotation."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from standardwebhooks import webhooks as standard
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.config import Settings
from tests.conftest import app_client
from tests.test_changes import eventually
from tests.test_subscriptions import FAST, Receiver, fresh, receiving, subscribe, write

__all__ = ["fresh"]  # the fixture, used by name


def verify(secret: str, body: bytes, headers: dict[str, str]) -> Any:
    return Webhook(secret).verify(body, headers)


class _Later(datetime):
    """The receiver's clock an hour on: a capture re-sent an hour after it was made."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.now(tz) + timedelta(hours=1)


async def test_a_delivery_verifies_with_the_standardwebhooks_library(fresh, settings) -> None:
    """The library verifies a real delivery and returns the entry; X-Hub-Signature holds too."""
    async with app_client(settings, **FAST) as http, receiving(Receiver()) as receiver:
        created = await subscribe(http, receiver.url)
        await write(fresh, "PRJ-1")
        await eventually(lambda: _got(receiver, 1))
    received, secret = receiver.taken[0], created["secret"]
    assert secret.startswith("whsec_")
    entry = verify(secret, received.body, received.headers)
    assert entry["key"] == "PRJ-1"
    assert received.headers["webhook-id"] == received.delivery_id
    expected = hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    assert received.signature == f"sha256={expected}"


async def test_a_replayed_delivery_is_rejected(fresh, settings, monkeypatch) -> None:
    """A capture re-sent an hour later fails on its age; with a new timestamp, on its signature."""
    async with app_client(settings, **FAST) as http, receiving(Receiver()) as receiver:
        created = await subscribe(http, receiver.url)
        await write(fresh, "PRJ-1", status=None)
        await eventually(lambda: _got(receiver, 1))
    received, secret = receiver.taken[0], created["secret"]
    verify(secret, received.body, received.headers)  # genuine, now
    with monkeypatch.context() as later:
        later.setattr(standard, "datetime", _Later)
        with pytest.raises(WebhookVerificationError, match="too old"):
            verify(secret, received.body, received.headers)
        restamped = {"webhook-timestamp": str(int(_Later.now().timestamp()))}
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            verify(secret, received.body, received.headers | restamped)


async def test_a_rotated_secret_signs_beside_the_old_until_the_window_ends(
    fresh: asyncpg.Pool, settings: Settings
) -> None:
    """After rotate-secret both secrets verify until SUBSCRIPTION_SECRET_OVERLAP, then the new."""
    # Long enough for the first delivery on a slow machine, short enough to wait out.
    overlap = {"subscription_secret_overlap": 5.0}
    async with app_client(settings, **FAST, **overlap) as http, receiving(Receiver()) as receiver:
        created = await subscribe(http, receiver.url)
        path = f"/api/v1/subscriptions/{created['id']}"
        rotated = await http.post(f"{path}/rotate-secret")
        assert rotated.status_code == 200 and rotated.json()["previous_secret_until"]
        old, new = created["secret"], rotated.json()["secret"]
        assert new != old and new not in (await http.get(path)).text
        await write(fresh, "PRJ-1")
        await eventually(lambda: _got(receiver, 1))
        await eventually(lambda: _window_over(fresh))
        await write(fresh, "PRJ-1", minutes=1, summary="later")
        await eventually(lambda: _got(receiver, 2))
    during, after = receiver.taken
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        verify(secret, during.body, during.headers)
    verify(new, after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        verify(old, after.body, after.headers)


async def _got(receiver: Receiver, count: int) -> bool:
    return len(receiver.taken) >= count


async def _window_over(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval("SELECT bool_and(previous_secret_until < now()) FROM subscriptions")
    )
