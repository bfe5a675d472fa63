"""HTTP routes under /api/v1 for reading cached issues and managing project links."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.http.errors import ApiError
from service.jira.client import JiraError
from service.model import CachedIssue, check_project_id, normalize_key
from service.storage import issues as store
from service.storage import links, tracking
from service.sync import memo
from service.sync.refresh import Refresher, Report


def render_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_issue(
    cached: CachedIssue, ttl: float, now: datetime, verified_at: datetime | None = None
) -> dict[str, Any]:
    """The issue as served; its age counts from when it was last known current: its own
    read, or a later sync round of its project that found no change to it."""
    issue = cached.issue
    known = cached.fetched_at if verified_at is None else max(cached.fetched_at, verified_at)
    age = max(0.0, (now - known).total_seconds())
    return {
        "key": issue.key,
        "id": str(issue.id),
        "status": None
        if issue.status is None
        else {"id": issue.status.id, "name": issue.status.name, "category": issue.status.category},
        "summary": issue.summary,
        "assignee": None
        if issue.assignee is None
        else {"account_id": issue.assignee.account_id, "display_name": issue.assignee.display_name},
        "priority": issue.priority,
        "jira_updated_at": render_time(issue.updated),
        "fetched_at": render_time(cached.fetched_at),
        "age_seconds": round(age, 3),
        "stale": age > ttl,
        "source": cached.source,
        "state": cached.state,
        "error": cached.error,
    }


def parse_keys(raw: str | None, limit: int) -> list[str]:
    """Read a comma-separated key list: valid, upper-cased, de-duplicated, in order."""
    parts = [part for part in (raw or "").split(",") if part.strip()]
    if not parts:
        raise ApiError(400, "missing_keys", "query parameter keys=A-1,B-2 is required")
    if len(parts) > limit:
        raise ApiError(400, "too_many_keys", f"{len(parts)} keys asked; at most {limit} at once")
    return list(dict.fromkeys(normalize_key(part) for part in parts))


def parse_max_age(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10**9:
        raise ApiError(400, "invalid_max_age", "max_age must be a number of seconds, 0 or more")
    return value


async def read(request: Request, keys: list[str]) -> dict[str, CachedIssue]:
    """The cached issues for the keys; misses and entries over ?max_age= read through Jira."""
    pool = request.state.pool
    max_age = parse_max_age(request.query_params.get("max_age"))
    found = await memo.select(pool, request.state.memo, keys)
    refresher: Refresher | None = request.state.refresher
    if refresher is None:
        return found
    now = datetime.now(UTC)
    wanted = [key for key in keys if key not in found or _older(found[key], max_age, now)]
    if not wanted:
        return found  # the hot path: no round trip to PostgreSQL at all
    settings: Settings = request.state.settings
    # A key Jira just said it does not know is not asked again until the negative TTL ends.
    known_missing = await store.recently_missing(
        pool, [key for key in wanted if key not in found], settings.negative_ttl
    )
    wanted = [key for key in wanted if key not in known_missing]
    if not wanted:
        return found
    try:
        report = await bounded(refresher.refresh(wanted, "refresh"), settings.read_timeout)
    except JiraError:
        if all(key in found for key in wanted):
            return found  # Jira is down but the cache has an answer: serve it, stale.
        raise
    await tracking.track(pool, report.keys("refreshed", "unchanged"))
    return await memo.select(pool, request.state.memo, keys)


async def bounded(work: Coroutine[Any, Any, Report], seconds: float) -> Report:
    """Wait at most `seconds` for a read; past that answer 503 while the read goes on.

    The read keeps its retries and fills the cache for the next caller, but a reader in
    someone's hot path is not held for Jira's whole backoff.
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        raise ApiError(
            503,
            "jira_slow",
            f"Jira did not answer within {seconds:g}s; retry later",
            {"Retry-After": "5"},
        ) from None


def _older(cached: CachedIssue, max_age: float | None, now: datetime) -> bool:
    return max_age is not None and (now - cached.fetched_at).total_seconds() > max_age


async def get_issue(request: Request) -> Response:
    key = normalize_key(request.path_params["key"])
    cached = (await read(request, [key])).get(key)
    if cached is not None:
        return JSONResponse(render_issue_now(request, cached))
    if request.state.refresher is None:
        raise ApiError(404, "not_cached", f"issue {key} is not in the cache")
    raise ApiError(404, "issue_not_found", f"Jira has no issue {key}, or hides it from us")


async def get_issues(request: Request) -> Response:
    settings: Settings = request.state.settings
    keys = parse_keys(request.query_params.get("keys"), settings.max_batch_keys)
    found = await read(request, keys)
    return JSONResponse(
        {
            "issues": [render_issue_now(request, found[key]) for key in keys if key in found],
            "missing": [key for key in keys if key not in found],
        }
    )


async def get_links(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    found = await links.list_links(request.state.pool, project_id)
    return JSONResponse(
        {
            "project_id": project_id,
            "links": [
                {
                    "key": link.key,
                    "linked_at": render_time(link.linked_at),
                    "state": "not_found" if link.missing and link.cached is None else None,
                    "issue": None
                    if link.cached is None
                    else render_issue_now(request, link.cached),
                }
                for link in found
            ],
        }
    )


async def put_link(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    key = normalize_key(request.path_params["key"])
    created = await links.link(request.state.pool, project_id, key)
    body = {"project_id": project_id, "key": key, "created": created}
    return JSONResponse(body, status_code=201 if created else 200)


async def delete_link(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    key = normalize_key(request.path_params["key"])
    if not await links.unlink(request.state.pool, project_id, key):
        raise ApiError(404, "link_not_found", f"project {project_id} does not link {key}")
    return Response(status_code=204)


async def link_or_unlink(request: Request) -> Response:
    # One Route for both methods, so that a 405 names both in Allow.
    return await (put_link if request.method == "PUT" else delete_link)(request)


def render_issue_now(request: Request, cached: CachedIssue) -> dict[str, Any]:
    settings: Settings = request.state.settings
    verified_at = request.state.verified.at(cached)
    return render_issue(cached, settings.cache_ttl, datetime.now(UTC), verified_at)


routes = [
    Route("/issues", get_issues, methods=["GET"]),
    Route("/issues/{key}", get_issue, methods=["GET"]),
    Route("/projects/{project_id}/jira", get_links, methods=["GET"]),
    Route("/projects/{project_id}/jira/{key}", link_or_unlink, methods=["PUT", "DELETE"]),
]
