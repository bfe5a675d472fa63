"""The webhook receiver over the real app and PostgreSQL, with Jira-shaped payloads."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.model import parse_jira_time
from service.storage import issues as store
from service.storage import tracking
from service.sync.schedule import prune_job
from tests.conftest import app_client
from tests.payloads import SECRET, encode, event, headers, sign
from tests.pgproxy import PgProxy

PATH = "/api/v1/webhooks/jira"
LETTERS = "/api/v1/webhooks/dead-letters"
ADMIN_TOKEN = "admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def hooks(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    tokens = {"api_tokens": frozenset({"t"}), "admin_tokens": frozenset({ADMIN_TOKEN})}
    async with app_client(settings, webhook_secret=SECRET, **tokens) as http:
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


def moved(payload: dict[str, Any]) -> dict[str, Any]:
    """The event as Jira sends it after a move: a changelog `Key` item (the other write path)."""
    payload["changelog"]["items"] = [{"field": "Key", "fromString": "OLD-1", "toString": "PRJ-7"}]
    return payload


@pytest.mark.parametrize("shape", [dict, moved], ids=["plain", "moved"])
async def test_older_event_after_newer_leaves_newer(hooks, db, shape) -> None:
    """Events out of order, through either write path: the newer fields.updated wins."""
    await post(hooks, shape(event(summary="new", updated="2026-11-26T05:10:00.000-0600")), "a")
    older = event(summary="old", updated="2026-11-26T05:05:00.000-0600")
    late = await post(hooks, shape(older), "b")
    assert late.status_code == 200 and late.json()["outcome"] == "stale"
    assert (await cached(db)).issue.summary == "new"


async def test_not_json_and_no_event_are_400_and_dead_lettered(hooks, db) -> None:
    """Signed bodies that are not Jira events answer 400 and are kept raw for operators."""
    for body in (b"{not json", b'{"issue": {}}'):
        response = await hooks.post(PATH, content=body, headers=headers(body))
        assert response.status_code == 400
    letters = await hooks.get(LETTERS, headers=ADMIN)
    bodies = [letter["body"] for letter in letters.json()["dead_letters"]]
    assert bodies == ['{"issue": {}}', "{not json"]
    assert await db.fetchval("SELECT count(*) FROM issues") == 0


def assigned_without_updated() -> dict[str, Any]:
    """A real `issue_assigned` delivery: Jira sent the issue without `fields.updated`."""
    payload = event()
    payload["issue_event_type_name"] = "issue_assigned"
    payload["issue"]["fields"] = {
        "summary": "Login fails",
        "assignee": {"accountId": "5b10a2844c20165700ede21g", "displayName": "Mia Krystof"},
    }
    payload["changelog"]["items"] = [
        {"field": "assignee", "fieldtype": "jira", "from": None, "to": "5b10a2844c20165700ede21g"}
    ]
    return payload


async def test_update_without_fields_updated_is_accepted_and_read_soon(hooks, db) -> None:
    """An update lacking fields.updated is 200 `due`: recorded, tracked, due now, not a letter."""
    response = await post(hooks, assigned_without_updated(), "a")
    again = await post(hooks, assigned_without_updated(), "a")
    due = await db.fetchval("SELECT next_due_at <= now() FROM tracked WHERE key = 'PRJ-7'")
    assert response.status_code == 200 and response.json() == {"outcome": "due"} and due
    assert again.json() == {"outcome": "duplicate"}
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert await cached(db) is None


async def test_unusable_fields_of_a_tracked_issue_make_it_due(hooks, db) -> None:
    """A tracked issue whose update carries a bad time is made due now, under its current key."""
    await post(hooks, event(key="NEW-3"), "a")
    await db.execute(
        "INSERT INTO tracked (key, next_due_at) VALUES ('NEW-3', now() + interval '1 hour')"
    )
    payload = event(key="NEW-3")
    payload["issue"]["fields"]["updated"] = "yesterday"
    del payload["issue"]["key"]
    response = await post(hooks, payload, "b")
    assert response.json() == {"outcome": "due"}
    assert await db.fetchval("SELECT next_due_at <= now() FROM tracked WHERE key = 'NEW-3'")


@pytest.mark.parametrize(
    "issue",
    [
        {},
        {"fields": {"summary": "no id, no key"}},
        {"id": "1" * 30, "key": "PRJ-7", "fields": {}},
        {"id": "10007", "key": "PRJ-" + "7" * 3000, "fields": {}},
    ],
)
async def test_update_naming_no_usable_issue_is_dead_lettered(hooks, db, issue) -> None:
    """An issue event naming no issue, or a malformed id or key, is 400 and a dead letter."""
    response = await post(hooks, {"webhookEvent": "jira:issue_updated", "issue": issue})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unusable_payload"
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 1
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0


@pytest.mark.parametrize("name", ["jira:issue_deleted", "comment_created"])
async def test_thirty_digit_id_is_400_not_500(hooks, db, name) -> None:
    """A delete or comment naming a 30-digit issue id is 400 and dead-lettered (Jira stops)."""
    payload = {"webhookEvent": name, "issue": {"id": "9" * 30, "key": "PRJ-7"}}
    response = await post(hooks, payload)
    assert response.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 1


async def test_deeply_nested_json_is_400_not_500(hooks, db) -> None:
    """A signed body nested past the recursion limit is 400 and dead-lettered."""
    body = b'{"webhookEvent": "x", "y": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await hooks.post(PATH, content=body, headers=headers(body))
    assert response.status_code == 400 and "nested" in response.json()["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 1


async def test_long_delivery_identifier_still_dedupes(hooks, db) -> None:
    """An identifier past the btree limit is kept as its hash: 200, and a retry is a duplicate."""
    identifier = secrets.token_urlsafe(4000)  # random: PostgreSQL cannot compress it
    first = await post(hooks, event(), identifier)
    again = await post(hooks, event(), identifier)
    assert (first.status_code, again.json()) == (200, {"outcome": "duplicate"})


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
    assert await tracking.tracked_keys(db) == ["NEW-3"]


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


async def add_letters(db: asyncpg.Pool, count: int, size: int) -> None:
    await db.executemany(
        "INSERT INTO dead_letters (delivery_id, error, body) VALUES ($1, 'bad', $2)",
        [(f"d-{n}", f"{n:06d}" + "x" * (size - 6)) for n in range(count)],
    )


async def test_dead_letters_are_paged_with_bodies_cut_short(hooks, db) -> None:
    """Large letters list as short previews within a byte budget; `before` pages on to the end."""
    await add_letters(db, 150, 64 * 1024)
    first = await hooks.get(f"{LETTERS}?limit=1000", headers=ADMIN)
    page = first.json()
    assert len(first.content) < 1024 * 1024 and page["next"] is not None
    assert all(
        letter["truncated"] and letter["body_bytes"] == 64 * 1024 for letter in page["dead_letters"]
    )
    seen = [letter["id"] for letter in page["dead_letters"]]
    while page["next"] is not None:
        page = (
            await hooks.get(f"{LETTERS}?limit=1000&before={page['next']}", headers=ADMIN)
        ).json()
        seen += [letter["id"] for letter in page["dead_letters"]]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 150


async def test_one_dead_letter_is_shown_whole(hooks, db) -> None:
    """A letter asked by id has its whole body, a time in Z; unknown and bad ids are 404 and 400."""
    await add_letters(db, 1, 5000)
    listed = (await hooks.get(LETTERS, headers=ADMIN)).json()["dead_letters"][0]
    whole = await hooks.get(f"{LETTERS}/{listed['id']}", headers=ADMIN)
    unknown = await hooks.get(f"{LETTERS}/{listed['id'] + 1}", headers=ADMIN)
    bad = await hooks.get(f"{LETTERS}/x1", headers=ADMIN)
    assert whole.json()["body"] == "000000" + "x" * 4994 and not whole.json()["truncated"]
    assert len(listed["body"]) < 5000 and listed["received_at"].endswith("Z")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "dead_letter_not_found")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_id")


async def test_dead_letters_need_an_admin_token(hooks, db, settings: Settings) -> None:
    """An API token does not open dead letters (403, it lacks admin), an admin token does."""
    api = await hooks.get(LETTERS, headers={"Authorization": "Bearer t"})
    admin = await hooks.get(LETTERS, headers=ADMIN)
    async with app_client(settings, api_tokens=frozenset({"t"})) as http:
        none = await http.get(LETTERS, headers={"Authorization": "Bearer t"})
    assert (api.status_code, admin.status_code, none.status_code) == (403, 200, 403)
    assert "admin" in api.json()["error"]["message"]


async def test_old_dead_letters_are_pruned(db) -> None:
    """The prune job deletes letters past DEAD_LETTER_RETENTION_DAYS and keeps younger ones."""
    await add_letters(db, 2, 10)
    await db.execute(
        "UPDATE dead_letters SET received_at = now() - interval '15 days' WHERE delivery_id = 'd-0'"
    )
    await prune_job(db, 7.0, 14.0)
    assert await db.fetchval("SELECT array_agg(delivery_id) FROM dead_letters") == ["d-1"]


async def test_dead_letters_are_counted_in_metrics(hooks, db) -> None:
    """Each delivery kept as a dead letter counts in jsc_dead_letters_total, and those held."""
    await hooks.post(PATH, content=b"{not json", headers=headers(b"{not json"))
    scraped = (await hooks.get("/metrics")).text
    assert "jsc_dead_letters_total 1.0" in scraped and "jsc_dead_letters_held 1.0" in scraped
