"""HTTP routes that read from Jira now: one issue, a project's links, everything due."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.http.errors import ApiError
from service.http.issues import render_issue_now
from service.http.middleware import bearer_token, token_matches
from service.model import check_project_id, normalize_key
from service.storage import issues as store
from service.storage import links
from service.sync.poller import Poller
from service.sync.refresh import Refresher


def refresher_of(request: Request) -> Refresher:
    refresher: Refresher | None = request.state.refresher
    if refresher is None:
        raise ApiError(503, "jira_not_configured", "set JIRA_BASE_URL to read from Jira")
    return refresher


async def refresh_issue(request: Request) -> Response:
    key = normalize_key(request.path_params["key"])
    report = await refresher_of(request).refresh([key], "refresh")
    pool = request.state.pool
    cached = await store.select_by_key(pool, key)
    if report.results[key].outcome == "not_found" and cached is None:
        raise ApiError(404, "issue_not_found", f"Jira has no issue {key}, or hides it from us")
    if cached is None:
        raise ApiError(502, "jira_error", report.results[key].error or "no answer for the key")
    return JSONResponse(render_issue_now(request, cached))


async def refresh_project(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    refresher = refresher_of(request)
    keys = await links.linked_keys(request.state.pool, project_id)
    report = await refresher.refresh(keys, "refresh")
    return JSONResponse({"project_id": project_id, **report.as_json()})


async def cron_refresh(request: Request) -> Response:
    """Run a poll cycle now over everything due (for an external cron)."""
    settings: Settings = request.state.settings
    accepted = settings.api_tokens | ({settings.cron_secret} if settings.cron_secret else set())
    token = bearer_token(request.scope)
    if accepted and (token is None or not token_matches(token, accepted)):
        raise ApiError(401, "unauthorized", "send CRON_SECRET or an API token as a bearer token")
    refresher_of(request)
    poller: Poller = request.state.poller
    report = await poller.poll()
    return JSONResponse(report.as_json())


routes = [
    Route("/cron/jira-refresh", cron_refresh, methods=["GET"]),
    Route("/issues/{key}/refresh", refresh_issue, methods=["POST"]),
    Route("/projects/{project_id}/jira/refresh", refresh_project, methods=["POST"]),
]
