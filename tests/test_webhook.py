"""The webhook receiver over the real app and PostgreSQL, with Jira-shaped payloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.model import parse_jira_time
from service.storage import issues as store
from service.storage import tracking
from tests.conftest import app_client
from tests.payloads import SECRET, encode, event, headers, sign
from tests.pgproxy import PgProxy

PATH = "/api/v1/webhooks/jira"


@pytest.fixture
async def hooks(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, webhook_secret=SECRET, api_tokens=frozenset({"t"})) as http:
        yield http


async def post(
    http: httpx.AsyncClient, payload: dict[str, Any], delivery: str = "d-1"
) -> httpx.Response:
    body = encode(payload)
    return await http.post(PATH, content=body, headers=headers(body, delivery))


async def cached(db: asyncpg.Pool, key: str = "PRJ-7") -> Any:
    return await store.select_by_key(db, key)


async def test_update_is_stored_from_a_signed_delivery(hooks, db) -> None:
    """A signed jira:issue_updated is applied at once, with source webhook."""
    response = await post(hooks, event(status="Fertig", category="done"))
    issue = await cached(db)
    assert response.status_code == 200 and response.json() == {"outcome": "applied"}
    assert issue.issue.status.category == "done" and issue.source == "webhook"


async def test_secret_in_url_is_accepted(hooks, db) -> None:
    """Data Center without signing: the secret in the query string authenticates."""
    body = encode(event())
    response = await hooks.post(f"{PATH}?secret={SECRET}", content=body)
    assert response.status_code == 200 and await cached(db) is not None


@pytest.mark.parametrize(
    ("header", "query", "code"),
    [
        ("sha256=" + "0" * 64, "", "invalid_signature"),
        (None, "", "missing_signature"),
        (None, "?secret=wrong", "invalid_signature"),
        ("md5=abc", "", "invalid_signature"),
        ("garbage", "", "invalid_signature"),
    ],
)
async def test_bad_signatures_are_401_and_store_nothing(hooks, db, header, query, code) -> None:
    """Wrong, missing and malformed signatures answer 401 and change nothing."""
    body = encode(event())
    sent = {"X-Hub-Signature": header} if header else {}
    response = await hooks.post(PATH + query, content=body, headers=sent)
    assert response.status_code == 401 and response.json()["error"]["code"] == code
    assert await cached(db) is None
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0


async def test_signature_of_another_secret_is_refused(hooks, db) -> None:
    """A body signed with another secret is refused."""
    body = encode(event())
    response = await hooks.post(PATH, content=body, headers={"X-Hub-Signature": sign(body, "x")})
    assert response.status_code == 401 and await cached(db) is None


async def test_disabled_without_a_secret(db, settings: Settings) -> None:
    """With no JIRA_WEBHOOK_SECRET the endpoint refuses everything with 403."""
    async with app_client(settings) as http:
        response = await post(http, event())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "webhooks_disabled"


async def test_duplicate_delivery_writes_once(hooks, db) -> None:
    """A retried delivery (same identifier) answers 200 and writes nothing."""
    first = await post(hooks, event(summary="one"), delivery="same")
    await db.execute("UPDATE issues SET summary = 'changed by hand'")
    again = await post(hooks, event(summary="one"), delivery="same")
    assert first.json()["outcome"] == "applied" and again.json()["outcome"] == "duplicate"
    assert (await cached(db)).issue.summary == "changed by hand"


async def test_older_event_after_newer_leaves_newer(hooks, db) -> None:
    """Events out of order: the one with the newer fields.updated wins."""
    await post(hooks, event(summary="new", updated="2026-11-26T05:10:00.000-0600"), "a")
    late = await post(hooks, event(summary="old", updated="2026-11-26T05:05:00.000-0600"), "b")
    assert late.status_code == 200 and late.json()["outcome"] == "stale"
    assert (await cached(db)).issue.summary == "new"


async def test_not_json_and_no_event_are_400_and_dead_lettered(hooks, db) -> None:
    """Signed bodies that are not Jira events answer 400 and are kept raw for operators."""
    for body in (b"{not json", b'{"issue": {}}'):
        response = await hooks.post(PATH, content=body, headers=headers(body))
        assert response.status_code == 400
    letters = await hooks.get(
        "/api/v1/webhooks/dead-letters", headers={"Authorization": "Bearer t"}
    )
    bodies = [letter["body"] for letter in letters.json()["dead_letters"]]
    assert bodies == ['{"issue": {}}', "{not json"]
    assert await db.fetchval("SELECT count(*) FROM issues") == 0


async def test_issue_without_usable_fields_is_dead_lettered(hooks, db) -> None:
    """An issue event whose issue cannot be normalized is 400 and dead-lettered."""
    payload = event()
    payload["issue"]["fields"]["updated"] = "yesterday"
    response = await post(hooks, payload)
    assert response.status_code == 400
    assert (
        await db.fetchval("SELECT error FROM dead_letters") == response.json()["error"]["message"]
    )
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0


async def test_body_over_limit_is_413(db, settings: Settings) -> None:
    """A webhook body over the configured limit answers 413."""
    async with app_client(settings, webhook_secret=SECRET, webhook_max_body_bytes=2048) as http:
        payload = event(summary="x" * 4096)
        response = await post(http, payload)
    assert response.status_code == 413 and await cached(db) is None


async def test_delete_is_a_tombstone_late_update_stays_out(hooks, db) -> None:
    """A deleted issue reads as deleted; an update older than the deletion does not revive it."""
    await hooks.put("/api/v1/projects/p/jira/PRJ-7", headers={"Authorization": "Bearer t"})
    await post(hooks, event(), "a")
    deleted = event("jira:issue_deleted")
    deleted["timestamp"] = int(parse_jira_time("2026-11-26T05:20:00.000-0600").timestamp() * 1000)
    await post(hooks, deleted, "b")
    await post(hooks, event(summary="late", updated="2026-11-26T05:10:00.000-0600"), "c")
    issue = await cached(db)
    links = await hooks.get("/api/v1/projects/p/jira", headers={"Authorization": "Bearer t"})
    assert issue.state == "deleted" and issue.issue.summary == "Login fails"
    assert links.json()["links"][0]["issue"]["state"] == "deleted"


async def test_move_keeps_old_key_and_links_follow(hooks, db) -> None:
    """After a move, the old key resolves to the issue and the project's link follows."""
    auth = {"Authorization": "Bearer t"}
    await post(hooks, event(key="OLD-7"), "a")
    await hooks.put("/api/v1/projects/p/jira/OLD-7", headers=auth)
    moved = event(key="NEW-3", updated="2026-11-26T05:01:00.000-0600")
    moved["issue_event_type_name"] = "issue_moved"
    moved["changelog"]["items"] = [{"field": "Key", "fromString": "OLD-7", "toString": "NEW-3"}]
    await post(hooks, moved, "b")
    old = await hooks.get("/api/v1/issues/OLD-7", headers=auth)
    links = await hooks.get("/api/v1/projects/p/jira", headers=auth)
    assert old.json()["key"] == "NEW-3"
    assert links.json()["links"][0]["issue"]["key"] == "NEW-3"
    assert await db.fetchval("SELECT array_agg(key) FROM tracked") == ["NEW-3"]


async def test_move_of_an_issue_never_seen_still_aliases(hooks, db) -> None:
    """A move event for an issue not cached yet still makes the old key resolve."""
    moved = event(key="NEW-3")
    moved["changelog"]["items"] = [{"field": "Key", "fromString": "OLD-7", "toString": "NEW-3"}]
    await post(hooks, moved)
    assert (await cached(db, "OLD-7")).issue.key == "NEW-3"


async def test_comment_makes_tracked_issue_due_without_writing(hooks, db) -> None:
    """A comment event writes no partial data but makes the issue due for a read now."""
    await post(hooks, event(), "a")
    await db.execute(
        "INSERT INTO tracked (key, next_due_at) VALUES ('PRJ-7', now() + interval '1 hour')"
    )
    comment = {
        "timestamp": 1795000000000,
        "webhookEvent": "comment_created",
        "comment": {"id": "1", "body": "hi"},
        "issue": {"id": "10007", "key": "PRJ-7", "fields": {"summary": "partial"}},
    }
    response = await post(hooks, comment, "b")
    due = await db.fetchval("SELECT next_due_at <= now() FROM tracked WHERE key = 'PRJ-7'")
    assert response.json()["outcome"] == "due" and due
    assert (await cached(db)).issue.summary == "Login fails"


async def test_other_events_are_ignored_with_200(hooks, db) -> None:
    """Events that name no issue answer 200 ignored."""
    response = await post(hooks, {"webhookEvent": "sprint_started", "sprint": {"id": 1}})
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"


async def test_webhook_reschedules_a_tracked_issue(hooks, db) -> None:
    """An issue kept fresh by webhooks is not polled: its claim only moves its due time."""
    await db.execute("INSERT INTO tracked (key) VALUES ('PRJ-7')")
    await post(hooks, event())
    claimed, _ = await tracking.claim_due(db, "poller", 10, 60, 3600)
    due = await db.fetchval("SELECT next_due_at > now() + interval '47 minutes' FROM tracked")
    assert claimed == [] and due


async def test_database_down_is_503_so_jira_retries(db, settings: Settings) -> None:
    """With PostgreSQL unreachable the receiver answers 503 and nothing is half-written."""
    proxy = PgProxy(settings.database_url or "")
    dsn = await proxy.start()
    async with app_client(settings, database_url=dsn, webhook_secret=SECRET, memo_size=0) as http:
        await proxy.cut()
        response = await post(http, event())
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert await cached(db) is None
