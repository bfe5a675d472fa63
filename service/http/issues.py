"""HTTP routes under /api/v1 for reading cached issues and managing project links."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import Settings
from service.http.errors import ApiError, ErrorCode, IssueNotFound
from service.http.responses import ShapedResponse
from service.http.services import services
from service.jira.errors import JiraError
from service.model import CachedIssue, check_project_id, normalize_key, render_time
from service.shapes import Encoded, Issue, shape_issue
from service.shapes.links import Link, LinkList, LinkResult
from service.storage import links
from service.sync.reads import JiraSlowError, Reader

JSON = "application/json"
# Per process: the issues' encoded answers, reused while the memo hands out the same issue.
ENCODED = Encoded()


def parse_keys(raw: str | None, limit: int) -> list[str]:
    """Read a comma-separated key list: valid, upper-cased, de-duplicated, in order."""
    parts = [part for part in (raw or "").split(",") if part.strip()]
    if not parts:
        raise ApiError(400, ErrorCode.MISSING_KEYS, "query parameter keys=A-1,B-2 is required")
    if len(parts) > limit:
        raise ApiError(
            400, ErrorCode.TOO_MANY_KEYS, f"{len(parts)} keys asked; at most {limit} at once"
        )
    return list(dict.fromkeys(normalize_key(part) for part in parts))


def parse_max_age(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10**9:
        raise ApiError(
            400, ErrorCode.INVALID_MAX_AGE, "max_age must be a number of seconds, 0 or more"
        )
    return value


async def read(request: Request, keys: list[str]) -> dict[str, CachedIssue]:
    """The issues the reader has for the keys, honouring ?max_age=."""
    query = request.query_params if request.scope["query_string"] else None
    max_age = parse_max_age(query.get("max_age") if query is not None else None)
    reader: Reader = services(request).reader
    try:
        return await reader.read(keys, max_age)
    except JiraSlowError as exc:
        raise ApiError(503, ErrorCode.JIRA_SLOW, str(exc), {"Retry-After": "5"}) from None


async def get_issue(request: Request) -> Response:
    key = normalize_key(request.path_params["key"])
    cached = (await read(request, [key])).get(key)
    if cached is not None:
        return Response(encode_issue_now(request, cached), media_type=JSON)
    if services(request).reader.refresher is None:
        raise ApiError(404, ErrorCode.NOT_CACHED, f"issue {key} is not in the cache")
    raise IssueNotFound(key)


async def get_issues(request: Request) -> Response:
    settings: Settings = services(request).settings
    keys = parse_keys(request.query_params.get("keys"), settings.max_batch_keys)
    found = await read(request, keys)
    issues = b",".join(encode_issue_now(request, found[key]) for key in keys if key in found)
    missing = msgspec.json.encode([key for key in keys if key not in found])
    body = b"".join((b'{"issues":[', issues, b'],"missing":', missing, b"}"))
    return Response(body, media_type=JSON)


async def get_links(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    found = await links.list_links(services(request).pool, project_id)
    shown = [
        Link(
            key=link.key,
            linked_at=render_time(link.linked_at),
            state="not_found" if link.missing and link.cached is None else None,
            issue=None if link.cached is None else render_issue_now(request, link.cached),
        )
        for link in found
    ]
    return ShapedResponse(LinkList(project_id, shown))


async def put_link(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    key = normalize_key(request.path_params["key"])
    created = await links.link(services(request).pool, project_id, key)
    state, cached = await read_linked(request, key)
    body = LinkResult(
        project_id=project_id,
        key=key,
        created=created,
        state=state,  # type: ignore[arg-type]  # a cached state, or pending
        issue=None if cached is None else render_issue_now(request, cached),
    )
    return ShapedResponse(body, status_code=201 if created else 200)


async def read_linked(request: Request, key: str) -> tuple[str, CachedIssue | None]:
    """Read a just-linked key as a GET would; "pending" when Jira cannot answer in time.

    The link is stored either way: Jira being down or slow must not fail it, and the
    poller (or the read still going on) fills the cache later.
    """
    reader: Reader = services(request).reader
    try:
        cached = (await reader.read([key], None)).get(key)
    except (JiraError, JiraSlowError):
        return "pending", None
    if cached is not None:
        return cached.state, cached
    return ("pending" if reader.refresher is None else "not_found"), None


async def delete_link(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    key = normalize_key(request.path_params["key"])
    if not await links.unlink(services(request).pool, project_id, key):
        raise ApiError(404, ErrorCode.LINK_NOT_FOUND, f"project {project_id} does not link {key}")
    return Response(status_code=204)


async def link_or_unlink(request: Request) -> Response:
    # One Route for both methods, so that a 405 names both in Allow.
    return await (put_link if request.method == "PUT" else delete_link)(request)


def encode_issue_now(request: Request, cached: CachedIssue) -> bytes:
    """The issue's answer as render_issue_now's, encoded: from ENCODED's parts."""
    settings: Settings = services(request).settings
    verified_at = services(request).verified.at(cached)
    return ENCODED.issue(cached, settings.cache_ttl, datetime.now(UTC), verified_at)


def render_issue_now(request: Request, cached: CachedIssue) -> Issue:
    settings: Settings = services(request).settings
    verified_at = services(request).verified.at(cached)
    return shape_issue(cached, settings.cache_ttl, datetime.now(UTC), verified_at)


read_routes = [
    Route("/issues", get_issues, methods=["GET"]),
    Route("/issues/{key}", get_issue, methods=["GET"]),
]
link_routes = [
    Route("/projects/{project_id}/jira", get_links, methods=["GET"]),
    Route("/projects/{project_id}/jira/{key}", link_or_unlink, methods=["PUT", "DELETE"]),
]
routes = read_routes + link_routes
