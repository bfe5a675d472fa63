"""HTTP routes under /api/v1 for reading cached issues and managing project links."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import Settings
from service.http.errors import ApiError
from service.http.responses import ShapedResponse
from service.jira.errors import JiraError
from service.model import CachedIssue, check_project_id, normalize_key, render_time
from service.shapes import Issue, shape_issue
from service.storage import links
from service.sync.reads import JiraSlowError, Reader


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
    """The issues the reader has for the keys, honouring ?max_age=."""
    max_age = parse_max_age(request.query_params.get("max_age"))
    reader: Reader = request.state.reader
    try:
        return await reader.read(keys, max_age)
    except JiraSlowError as exc:
        raise ApiError(503, "jira_slow", str(exc), {"Retry-After": "5"}) from None


async def get_issue(request: Request) -> Response:
    key = normalize_key(request.path_params["key"])
    cached = (await read(request, [key])).get(key)
    if cached is not None:
        return ShapedResponse(render_issue_now(request, cached))
    if request.state.reader.refresher is None:
        raise ApiError(404, "not_cached", f"issue {key} is not in the cache")
    raise ApiError(404, "issue_not_found", f"Jira has no issue {key}, or hides it from us")


async def get_issues(request: Request) -> Response:
    settings: Settings = request.state.settings
    keys = parse_keys(request.query_params.get("keys"), settings.max_batch_keys)
    found = await read(request, keys)
    return ShapedResponse(
        {
            "issues": [render_issue_now(request, found[key]) for key in keys if key in found],
            "missing": [key for key in keys if key not in found],
        }
    )


async def get_links(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    found = await links.list_links(request.state.pool, project_id)
    return ShapedResponse(
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
    state, cached = await read_linked(request, key)
    body = {
        "project_id": project_id,
        "key": key,
        "created": created,
        "state": state,
        "issue": None if cached is None else render_issue_now(request, cached),
    }
    return ShapedResponse(body, status_code=201 if created else 200)


async def read_linked(request: Request, key: str) -> tuple[str, CachedIssue | None]:
    """Read a just-linked key as a GET would; "pending" when Jira cannot answer in time.

    The link is stored either way: Jira being down or slow must not fail it, and the
    poller (or the read still going on) fills the cache later.
    """
    reader: Reader = request.state.reader
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
    if not await links.unlink(request.state.pool, project_id, key):
        raise ApiError(404, "link_not_found", f"project {project_id} does not link {key}")
    return Response(status_code=204)


async def link_or_unlink(request: Request) -> Response:
    # One Route for both methods, so that a 405 names both in Allow.
    return await (put_link if request.method == "PUT" else delete_link)(request)


def render_issue_now(request: Request, cached: CachedIssue) -> Issue:
    settings: Settings = request.state.settings
    verified_at = request.state.verified.at(cached)
    return shape_issue(cached, settings.cache_ttl, datetime.now(UTC), verified_at)


routes = [
    Route("/issues", get_issues, methods=["GET"]),
    Route("/issues/{key}", get_issue, methods=["GET"]),
    Route("/projects/{project_id}/jira", get_links, methods=["GET"]),
    Route("/projects/{project_id}/jira/{key}", link_or_unlink, methods=["PUT", "DELETE"]),
]
