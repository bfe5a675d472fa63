"""Input past the bounds of keys and project ids answers 400, never a 500 from PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import app_client

LONG_KEY = "PRJ-" + "7" * 3000


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/v1/issues/{LONG_KEY}"),
        ("GET", f"/api/v1/issues?keys=PRJ-1,{LONG_KEY}"),
        ("PUT", f"/api/v1/projects/p/jira/{LONG_KEY}"),
        ("DELETE", f"/api/v1/projects/p/jira/{LONG_KEY}"),
        ("POST", f"/api/v1/issues/{LONG_KEY}/refresh"),
    ],
)
async def test_a_3000_character_key_is_400(client: httpx.AsyncClient, db, method, path) -> None:
    """A key of 3,000 characters answers 400 invalid_key, quoted short, and writes nothing."""
    response = await client.request(method, path)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_key"
    assert len(response.text) < 500
    assert await db.fetchval("SELECT count(*) FROM links") == 0


async def test_a_long_project_id_is_400(client: httpx.AsyncClient) -> None:
    """A project id of 3,000 characters answers 400 invalid_project_id, quoted short."""
    response = await client.put(f"/api/v1/projects/{'p' * 3000}/jira/PRJ-1")
    assert response.status_code == 400 and len(response.text) < 500
    assert response.json()["error"]["code"] == "invalid_project_id"


async def test_a_streamed_body_over_the_limit_is_413(db, settings) -> None:
    """A body sent in chunks, with no Content-Length, is cut at the limit with 413."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"x" * 1024

    async with app_client(
        settings, webhook_secret="s", max_body_bytes=2048, webhook_max_body_bytes=2048
    ) as http:
        response = await http.post("/api/v1/webhooks/jira?secret=s", content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
