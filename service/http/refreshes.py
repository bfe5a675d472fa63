"""HTTP routes that read from Jira now: one issue, a project's links, everything due."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.http.errors import ApiError, IssueNotFound, JiraNotConfigured
from service.http.issues import render_issue_now
from service.model import check_project_id, normalize_key
from service.storage import issues as store
from service.storage import links, tracking
from service.sync.poller import Poller
from service.sync.refresh import Refresher


def refresher_of(request: Request) -> Refresher:
    refresher: Refresher | None = request.state.refresher
    if refresher is None:
        raise JiraNotConfigured()
    return refresher


async def refresh_issue(request: Request) -> Response:
    key = normalize_key(request.path_params["key"])
    report = await refresher_of(request).refresh([key], "refresh")
    pool = request.state.pool
    cached = await store.select_by_key(pool, key)
    if report.results[key].outcome == "not_found" and cached is None:
        raise IssueNotFound(key)
    if cached is None:
        raise ApiError(502, "jira_error", report.results[key].error or "no answer for the key")
    await tracking.track(pool, [cached.issue.key])
    return JSONResponse(render_issue_now(request, cached))


async def refresh_project(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    refresher = refresher_of(request)
    keys = await links.linked_keys(request.state.pool, project_id)
    report = await refresher.refresh(keys, "refresh")
    return JSONResponse({"project_id": project_id, **report.as_json()})


async def cron_refresh(request: Request) -> Response:
    """Run a poll cycle now over everything due (for an external cron)."""
    refresher_of(request)
    poller: Poller = request.state.poller
    report = await poller.poll()
    return JSONResponse(report.as_json())


# Guarded in app.py: the cron route also takes CRON_SECRET.
cron_routes = [Route("/cron/jira-refresh", cron_refresh, methods=["GET"])]
routes = [
    Route("/issues/{key}/refresh", refresh_issue, methods=["POST"]),
    Route("/projects/{project_id}/jira/refresh", refresh_project, methods=["POST"]),
]
