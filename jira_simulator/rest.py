"""Jira's REST surface for reading issues: issue, bulkfetch, search/jql, the DC search, myself."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from . import jql
from .gate import ANONYMOUS, SIM, jira_errors, unauthorized
from .options import Flavor
from .render import FieldSelection, Shape, format_time, render_issue, render_myself
from .state import SimIssue

NOT_FOUND = "Issue does not exist or you do not have permission to see it."
REMOVED = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
    "A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"
)
UNBOUNDED = (
    "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
)
BULK_LIMIT = 100


@dataclass(frozen=True, slots=True)
class SearchParams:
    jql: str
    fields: list[str] | None
    max_results: int | None
    start_at: int
    token: str | None


def rest_routes(flavor: Flavor) -> list[web.RouteDef]:
    """Cloud serves API versions 2 and 3 and has removed the old search; DC has only v2."""
    if flavor == "dc":
        base = "/rest/api/{version:2|latest}"
        return [
            web.get(base + "/issue/{ref}", get_issue),
            web.get(base + "/search", search_dc),
            web.post(base + "/search", search_dc),
            web.get(base + "/myself", myself),
            web.get(base + "/serverInfo", server_info),
        ]
    base = "/rest/api/{version:2|3}"
    return [
        web.post(base + "/issue/bulkfetch", bulkfetch),
        web.get(base + "/issue/{ref}", get_issue),
        web.get(base + "/search/jql", search_jql),
        web.post(base + "/search/jql", search_jql),
        web.get(base + "/search", removed_search),
        web.post(base + "/search", removed_search),
        web.get(base + "/myself", myself),
        web.get(base + "/serverInfo", server_info),
    ]


async def get_issue(request: web.Request) -> web.Response:
    issue = visible(request, request.match_info["ref"])
    if issue is None:
        return jira_errors(404, NOT_FOUND)
    selection = FieldSelection.parse(request.query.get("fields", "*all").split(","))
    return web.json_response(_render(request, issue, selection))


async def bulkfetch(request: web.Request) -> web.Response:
    body = await _json_object(request)
    if body is None:
        return jira_errors(400, "The request body is not a JSON object.")
    refs = body.get("issueIdsOrKeys")
    if not isinstance(refs, list) or not all(isinstance(ref, str | int) for ref in refs):
        return jira_errors(400, "issueIdsOrKeys must be a list of issue IDs or keys.")
    if not 1 <= len(refs) <= BULK_LIMIT:
        return jira_errors(400, f"The number of issues must be between 1 and {BULK_LIMIT}.")
    found = {issue.id: issue for ref in refs if (issue := visible(request, str(ref)))}
    selection = FieldSelection.parse(_names(body, "fields") or ["*navigable"])
    # Unknown and forbidden issues are left out silently; issueErrors is for retriable trouble.
    issues = [_render(request, found[number], selection) for number in sorted(found)]
    return web.json_response({"issues": issues, "issueErrors": []})


async def search_jql(request: web.Request) -> web.Response:
    params = await _search_params(request)
    if params is None:
        return jira_errors(400, "The request is not a valid search.")
    try:
        query = jql.parse(params.jql)
        if not query.clauses:
            return jira_errors(400, UNBOUNDED)
        issues = _run(request, query)
    except jql.JqlError as error:
        return jira_errors(400, *error.messages)
    start = _read_token(params.token, params.jql)
    if start is None:
        return jira_errors(400, "The provided next page token is invalid.")
    return web.json_response(_jql_page(request, params, issues, start))


async def search_dc(request: web.Request) -> web.Response:
    params = await _search_params(request)
    if params is None:
        return jira_errors(400, "The request is not a valid search.")
    try:
        issues = _run(request, jql.parse(params.jql))
    except jql.JqlError as error:
        return jira_errors(400, *error.messages)
    limit = min(params.max_results if params.max_results is not None else 50, 1000)
    selection = FieldSelection.parse(params.fields or ["*navigable"])
    page = issues[params.start_at : params.start_at + limit]
    return web.json_response(
        {
            "expand": "schema,names",
            "startAt": params.start_at,
            "maxResults": limit,
            "total": len(issues),
            "issues": [_render(request, issue, selection) for issue in page],
        }
    )


async def removed_search(request: web.Request) -> web.Response:
    return jira_errors(410, REMOVED)


async def myself(request: web.Request) -> web.Response:
    if request.get(ANONYMOUS):
        return unauthorized()
    sim = request.app[SIM]
    return web.json_response(render_myself(sim.site.users[0], sim.options.email, _shape(request)))


async def server_info(request: web.Request) -> web.Response:
    """The site's version and its clock (`serverTime`), as Jira answers any caller."""
    sim = request.app[SIM]
    cloud = sim.options.flavor == "cloud"
    return web.json_response(
        {
            "baseUrl": sim.base_url,
            "version": "1001.0.0-SNAPSHOT" if cloud else "10.3.1",
            "deploymentType": "Cloud" if cloud else "Server",
            "serverTime": format_time(sim.site.clock()),
        }
    )


def visible(request: web.Request, ref: str) -> SimIssue | None:
    """The issue if this caller may see it; anonymous callers see nothing."""
    if request.get(ANONYMOUS):
        return None
    return request.app[SIM].site.lookup(ref)


def _run(request: web.Request, query: jql.Query) -> list[SimIssue]:
    sim = request.app[SIM]
    site = sim.site
    if request.get(ANONYMOUS):
        return jql.run(query, site, lambda ref: None, everyone=False)
    found = jql.run(query, site, site.lookup)
    if sim.options.search_lag > 0:
        # Jira's index lags its writes: an issue written just now is not found yet.
        indexed = site.clock() - timedelta(seconds=sim.options.search_lag)
        found = [issue for issue in found if issue.updated <= indexed]
    return found


def _jql_page(
    request: web.Request, params: SearchParams, issues: list[SimIssue], start: int
) -> dict[str, Any]:
    """A page of search/jql: ids only unless fields were asked for; no token on the last page."""
    slim = params.fields is None or set(params.fields) <= {"id", "key"}
    limit = min(params.max_results or 50, 5000 if slim else 100)
    page = issues[start : start + limit]
    if params.fields is None:
        rendered = [{"id": str(issue.id)} for issue in page]
    else:
        selection = FieldSelection.parse(params.fields)
        rendered = [_render(request, issue, selection) for issue in page]
    body: dict[str, Any] = {"issues": rendered}
    if start + limit < len(issues):
        body["nextPageToken"] = _make_token(start + limit, params.jql)
    body["isLast"] = "nextPageToken" not in body
    return body


async def _search_params(request: web.Request) -> SearchParams | None:
    if request.method == "GET":
        source: dict[str, Any] = dict(request.query)
        fields = source["fields"].split(",") if "fields" in source else None
    else:
        body = await _json_object(request)
        if body is None:
            return None
        source, fields = body, _names(body, "fields")
    try:
        return SearchParams(
            jql=str(source.get("jql") or ""),
            fields=fields,
            max_results=int(source["maxResults"]) if "maxResults" in source else None,
            start_at=int(source.get("startAt") or 0),
            token=source.get("nextPageToken"),
        )
    except (TypeError, ValueError):
        return None


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _names(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if isinstance(value, str):
        return value.split(",")
    return [str(item) for item in value] if isinstance(value, list) else None


def _make_token(offset: int, query: str) -> str:
    """Opaque to the client; it binds the offset to the query it was issued for."""
    text = json.dumps({"o": offset, "q": hashlib.sha256(query.encode()).hexdigest()[:12]})
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _read_token(token: str | None, query: str) -> int | None:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        same = data["q"] == hashlib.sha256(query.encode()).hexdigest()[:12]
        return int(data["o"]) if same else None
    except (ValueError, KeyError, TypeError):
        return None


def _shape(request: web.Request) -> Shape:
    version = request.match_info.get("version", "2")
    return request.app[SIM].shape(
        "2" if version == "latest" else version, str(request.url.origin())
    )


def _render(request: web.Request, issue: SimIssue, selection: FieldSelection) -> dict[str, Any]:
    return render_issue(issue, request.app[SIM].site, _shape(request), selection)
