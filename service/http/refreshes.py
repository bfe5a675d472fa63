"""HTTP routes that read from Jira now: one issue, a project's links, everything due."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.http.errors import ApiError, ErrorCode, IssueNotFound, JiraNotConfigured
from service.http.issues import render_issue_now
from service.http.responses import ShapedResponse
from service.http.services import services
from service.model import check_project_id, normalize_key
from service.shapes import shape_project_report, shape_report
from service.storage import issues as store
from service.storage import links
from service.sync.reads import Reader
from service.sync.refresh import Refresher, Report


def refresher_of(request: Request) -> Refresher:
    refresher: Refresher | None = services(request).refresher
    if refresher is None:
        raise JiraNotConfigured()
    return refresher


async def refresh_issue(request: Request) -> Response:
    key = normalize_key(request.path_params["key"])
    report = await refresher_of(request).refresh([key], "refresh")
    pool = services(request).pool
    cached = await store.select_by_key(pool, key)
    if report.results[key].outcome == "not_found" and cached is None:
        raise IssueNotFound(key)
    if cached is None:
        raise ApiError(
            502, ErrorCode.JIRA_ERROR, report.results[key].error or "no answer for the key"
        )
    return ShapedResponse(render_issue_now(request, cached))


async def refresh_project(request: Request) -> Response:
    project_id = check_project_id(request.path_params["project_id"])
    refresher_of(request)
    keys = await links.linked_keys(services(request).pool, project_id)
    reader: Reader = services(request).reader
    report = Report()
    complete = await reader.refresh(keys, report)
    return ShapedResponse(shape_project_report(project_id, report, complete))


async def cron_refresh(request: Request) -> Response:
    """Run a poll cycle now over everything due (for an external cron)."""
    settings, poller = services(request).settings, services(request).poller
    if poller is None:  # made with the refresher: no Jira, neither
        raise JiraNotConfigured()
    try:
        # The cycle goes on past the bound (the poller drains it on shutdown).
        report = await asyncio.wait_for(poller.poll(), settings.refresh_timeout)
    except TimeoutError:
        return ShapedResponse(shape_report(poller.report, complete=False))
    return ShapedResponse(shape_report(report, complete=True))


# Guarded in app.py: the cron route also takes CRON_SECRET.
cron_routes = [Route("/cron/jira-refresh", cron_refresh, methods=["GET"])]
routes = [
    Route("/issues/{key}/refresh", refresh_issue, methods=["POST"]),
    Route("/projects/{project_id}/jira/refresh", refresh_project, methods=["POST"]),
]
