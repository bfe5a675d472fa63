"""The HTTP API over the real app and PostgreSQL: reads, links, tokens, bad input."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from service.config import JiraSettings, Settings
from service.storage import issues as store
from service.storage import tracking
from tests.conftest import app_client
from tests.factory import make_issue
from tests.live import free_port
from tests.pgproxy import PgProxy


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def test_get_issue_answers_the_documented_shape(client: httpx.AsyncClient, db) -> None:
    """A cached issue is served with every documented field, times in UTC."""
    await store.upsert_issues(db, [make_issue()], "webhook")
    response = await client.get("/api/v1/issues/prj-7")
    body = response.json()
    assert response.status_code == 200
    assert body["key"] == "PRJ-7" and body["id"] == "10007"
    assert body["status"] == {"id": "3", "name": "In Progress", "category": "indeterminate"}
    assert body["jira_updated_at"] == "2026-11-26T11:00:00.000Z"
    assert body["fetched_at"].endswith("Z") and body["stale"] is False
    assert (body["source"], body["state"], body["error"]) == ("webhook", "ok", None)
    assert body["assignee"] is None and body["priority"] == "High"


async def test_stale_when_older_than_ttl(db, settings: Settings) -> None:
    """An entry older than JIRA_CACHE_TTL is flagged stale."""
    await store.upsert_issues(db, [make_issue()], "poll")
    await db.execute("UPDATE issues SET fetched_at = now() - interval '2 hours'")
    async with app_client(settings, cache_ttl=3600.0) as http:
        body = (await http.get("/api/v1/issues/PRJ-7")).json()
    assert body["stale"] is True and body["age_seconds"] > 7199


async def test_old_key_resolves_to_moved_issue(client: httpx.AsyncClient, db) -> None:
    """A key the issue had before a move still answers, with the current key."""
    await store.upsert_issues(db, [make_issue(key="OLD-7")], "poll")
    await store.upsert_issues(db, [make_issue(key="NEW-7", minutes=1)], "webhook")
    body = (await client.get("/api/v1/issues/OLD-7")).json()
    assert body["key"] == "NEW-7"


async def test_batch_read_splits_found_and_missing(client: httpx.AsyncClient, db) -> None:
    """A batch read answers the cached issues and names the keys it lacks."""
    await store.upsert_issues(db, [make_issue(), make_issue(id=2, key="PRJ-2")], "poll")
    response = await client.get("/api/v1/issues", params={"keys": "PRJ-2,prj-7,PRJ-9,PRJ-2"})
    body = response.json()
    assert response.status_code == 200
    assert [issue["key"] for issue in body["issues"]] == ["PRJ-2", "PRJ-7"]
    assert body["missing"] == ["PRJ-9"]


async def test_link_list_and_unlink(client: httpx.AsyncClient, db) -> None:
    """Linking is idempotent, lists with the cached issue, and unlinking removes it."""
    await store.upsert_issues(db, [make_issue()], "poll")
    first = await client.put("/api/v1/projects/proj-1/jira/PRJ-7")
    again = await client.put("/api/v1/projects/proj-1/jira/prj-7")
    await client.put("/api/v1/projects/proj-1/jira/PRJ-8")
    listed = (await client.get("/api/v1/projects/proj-1/jira")).json()
    assert (first.status_code, again.status_code) == (201, 200)
    assert [link["key"] for link in listed["links"]] == ["PRJ-7", "PRJ-8"]
    assert listed["links"][0]["issue"]["summary"] == "Login fails"
    assert listed["links"][1]["issue"] is None
    removed = await client.delete("/api/v1/projects/proj-1/jira/PRJ-7")
    gone = await client.delete("/api/v1/projects/proj-1/jira/PRJ-7")
    assert removed.status_code == 204
    assert gone.status_code == 404 and error_code(gone) == "link_not_found"


async def test_linking_tracks_the_key_once(client: httpx.AsyncClient, db) -> None:
    """Two projects linking one key track it once; unlinked and unread, it is forgotten later."""
    await client.put("/api/v1/projects/a/jira/PRJ-7")
    await client.put("/api/v1/projects/b/jira/PRJ-7")
    assert await tracking.tracked_keys(db) == ["PRJ-7"]
    await client.delete("/api/v1/projects/a/jira/PRJ-7")
    assert await tracking.tracked_keys(db) == ["PRJ-7"]
    await client.delete("/api/v1/projects/b/jira/PRJ-7")
    assert await tracking.tracked_keys(db) == ["PRJ-7"]
    await db.execute("UPDATE tracked SET read_at = now() - interval '8 days'")
    assert await tracking.forget_unread(db, 7 * 86400) == 1


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/v1/issues/not-a-key", 400, "invalid_key"),
        ("GET", "/api/v1/issues/PRJ-0", 400, "invalid_key"),
        ("GET", "/api/v1/issues?keys=PRJ-1,bad key", 400, "invalid_key"),
        ("GET", "/api/v1/issues", 400, "missing_keys"),
        ("PUT", "/api/v1/projects/bad%20id/jira/PRJ-1", 400, "invalid_project_id"),
        ("PUT", f"/api/v1/projects/{'p' * 129}/jira/PRJ-1", 400, "invalid_project_id"),
        ("PUT", "/api/v1/projects/p/jira/1-PRJ", 400, "invalid_key"),
        ("GET", "/api/v1/issues/PRJ-404", 404, "not_cached"),
        ("GET", "/api/v1/nowhere", 404, "not_found"),
        ("DELETE", "/api/v1/issues/PRJ-1", 405, "method_not_allowed"),
    ],
)
async def test_bad_input_is_a_json_error(client, db, method, path, status, code) -> None:
    """Each bad request answers its status and a JSON error code, and writes nothing."""
    response = await client.request(method, path)
    assert response.status_code == status
    assert error_code(response) == code and response.json()["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM links") == 0


async def test_more_than_500_keys_is_refused(client: httpx.AsyncClient) -> None:
    """A batch read of 501 keys answers 400 too_many_keys."""
    keys = ",".join(f"PRJ-{n}" for n in range(1, 502))
    response = await client.get("/api/v1/issues", params={"keys": keys})
    assert response.status_code == 400 and error_code(response) == "too_many_keys"


async def test_body_over_limit_is_413(client: httpx.AsyncClient, db) -> None:
    """A body over 1 MiB is refused with 413 and changes nothing."""
    response = await client.put("/api/v1/projects/p/jira/PRJ-1", content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413 and error_code(response) == "body_too_large"
    assert await db.fetchval("SELECT count(*) FROM links") == 0


async def test_tokens_guard_the_api_but_not_health(db, settings: Settings) -> None:
    """With API_TOKENS set, /api/v1 needs one of them; health probes stay open."""
    async with app_client(settings, api_tokens=frozenset({"tok-a", "tok-b"})) as http:
        missing = await http.get("/api/v1/issues/PRJ-1")
        wrong = await http.get("/api/v1/issues/PRJ-1", headers={"Authorization": "Bearer nope"})
        right = await http.get("/api/v1/issues/PRJ-1", headers={"Authorization": "Bearer tok-b"})
        health = await http.get("/healthz")
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert (
        error_code(missing) == "unauthorized"
        and "tok-a" not in wrong.text
        and "nope" not in wrong.text
    )
    assert right.status_code == 404 and health.status_code == 200


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    """/healthz answers ok; /readyz answers ready once migrations are applied."""
    health = await client.get("/healthz")
    ready = await client.get("/readyz")
    assert health.json()["status"] == "ok"
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_database_unreachable_is_503(db: asyncpg.Pool, settings: Settings) -> None:
    """With PostgreSQL out of reach, reads answer 503 with Retry-After and readyz fails."""
    proxy = PgProxy(settings.database_url or "")
    async with app_client(settings, database_url=await proxy.start(), memo_size=0) as http:
        assert (await http.get("/readyz")).status_code == 200
        await proxy.cut()
        response = await http.get("/api/v1/issues/PRJ-1")
        ready = await http.get("/readyz")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert error_code(response) == "database_unavailable"
    assert ready.status_code == 503


async def test_jira_refusing_connections(db: asyncpg.Pool, settings: Settings) -> None:
    """Jira refusing: a miss is 503 jira_unavailable at once; a cached read with max_age is 200."""
    await store.upsert_issues(db, [make_issue()], "poll")
    closed = f"http://127.0.0.1:{free_port()}"
    jira = JiraSettings(base_url=closed, email="bot@example.com", api_token="t")
    async with app_client(settings, jira=jira, poll_interval=0.0) as http:
        miss = await http.get("/api/v1/issues/PRJ-8")
        hit = await http.get("/api/v1/issues/PRJ-7", params={"max_age": "0"})
    assert miss.status_code == 503 and error_code(miss) == "jira_unavailable"
    assert int(miss.headers["Retry-After"]) >= 1
    assert hit.status_code == 200 and hit.json()["key"] == "PRJ-7"
