"""The /_sim/... JSON endpoints, so another process (a demo, a benchmark) can drive it."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .gate import SIM, Handler
from .render import format_time

if TYPE_CHECKING:
    from .server import Simulator

# Options that can change while the server runs; flavour, zone and seed need a restart.
RUNTIME_OPTIONS = frozenset(
    {
        "latency",
        "search_lag",
        "clock_offset",
        "minute_precision",
        "rate_limit",
        "burst",
        "retry_after",
        "omit_retry_after",
        "email",
        "token",
        "pat",
        "category_names",
        "webhook_url",
        "webhook_secret",
        "webhook_secret_in_query",
        "webhook_events",
        "webhook_timeout",
        "webhook_backoff",
        "webhook_max_tries",
    }
)
_SECRETS = ("token", "pat", "webhook_secret")


def admin_app(sim: Simulator) -> web.Application:
    """A sub-application mounted at /_sim, with its own error handling."""
    app = web.Application(middlewares=[admin_errors])
    app[SIM] = sim
    app.add_routes(
        [
            web.get("/stats", stats),
            web.post("/reset", reset),
            web.get("/issues", list_issues),
            web.post("/seed", seed),
            web.post("/issues", create),
            web.post("/issues/{ref}/transition", transition),
            web.post("/issues/{ref}/summary", summary),
            web.post("/issues/{ref}/assign", assign),
            web.post("/issues/{ref}/move", move),
            web.post("/issues/{ref}/comment", comment),
            web.delete("/issues/{ref}", delete),
            web.post("/faults/fail", fail),
            web.post("/faults/hang", hang),
            web.post("/faults/storm", storm),
            web.post("/faults/forbid", forbid),
            web.post("/faults/allow", allow),
            web.delete("/faults", clear_faults),
            web.get("/options", options),
            web.patch("/options", options),
            web.get("/webhooks", webhooks),
            web.patch("/webhooks", webhooks),
            web.post("/webhooks/drain", drain),
        ]
    )
    return app


@web.middleware
async def admin_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bad input answers 400 and unknown issues, statuses or users 404, each with a code."""
    try:
        return await handler(request)
    except (KeyError, TypeError, ValueError) as error:
        return web.json_response({"code": "bad_request", "error": str(error)}, status=400)
    except LookupError as error:
        return web.json_response({"code": "not_found", "error": str(error)}, status=404)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM].stats())


async def reset(request: web.Request) -> web.Response:
    request.app[SIM].reset_counters()
    return web.json_response({})


async def list_issues(request: web.Request) -> web.Response:
    site = request.app[SIM].site
    return web.json_response(
        [
            {
                "id": str(issue.id),
                "key": issue.key,
                "status": issue.status.name,
                "category": issue.status.category,
                "updated": format_time(issue.updated),
                "hidden": issue.id in site.hidden,
            }
            for issue in site.issues.values()
        ]
    )


async def seed(request: web.Request) -> web.Response:
    body = await _body(request)
    projects = body.get("projects") or ["ALPHA", "BETA", "GAMMA"]
    return web.json_response({"keys": request.app[SIM].seed(int(body.get("count", 200)), projects)})


async def create(request: web.Request) -> web.Response:
    body = await _body(request)
    return web.json_response({"key": request.app[SIM].create_issue(**body)}, status=201)


async def transition(request: web.Request) -> web.Response:
    body = await _body(request)
    status = request.app[SIM].transition(request.match_info["ref"], body.get("status"))
    return web.json_response({"status": status})


async def summary(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM].edit_summary(request.match_info["ref"], str(body["summary"]))
    return web.json_response({})


async def assign(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM].assign(request.match_info["ref"], body.get("assignee"))
    return web.json_response({})


async def move(request: web.Request) -> web.Response:
    body = await _body(request)
    key = request.app[SIM].move(request.match_info["ref"], str(body["project"]))
    return web.json_response({"key": key})


async def comment(request: web.Request) -> web.Response:
    body = await _body(request)
    number = request.app[SIM].comment(
        request.match_info["ref"], str(body.get("body", "A comment."))
    )
    return web.json_response({"id": number})


async def delete(request: web.Request) -> web.Response:
    request.app[SIM].delete(request.match_info["ref"])
    return web.json_response({})


async def fail(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM].fail_next(**body)
    return web.json_response({})


async def hang(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM].hang_next(**body)
    return web.json_response({})


async def storm(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM].storm(float(body["seconds"]))
    return web.json_response({})


async def forbid(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM].forbid(*body["keys"])
    return web.json_response({})


async def allow(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[SIM].allow(*body["keys"])
    return web.json_response({})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[SIM].clear_faults()
    return web.json_response({})


async def options(request: web.Request) -> web.Response:
    """GET shows the options (secrets masked); PATCH changes the runtime ones."""
    current = request.app[SIM].options
    for name, value in (await _body(request)).items():
        if name not in RUNTIME_OPTIONS:
            raise ValueError(f"{name!r} is not an option that can change at runtime")
        setattr(current, name, frozenset(value) if name == "webhook_events" else value)
    shown = {name: value for name, value in asdict(current).items() if name not in _SECRETS}
    shown["webhook_events"] = sorted(current.webhook_events)
    return web.json_response(shown)


async def webhooks(request: web.Request) -> web.Response:
    """GET shows switches, attempts and drops; PATCH changes the delivery switches."""
    hooks = request.app[SIM].hooks
    for name, value in (await _body(request)).items():
        if not hasattr(hooks.switches, name):
            raise ValueError(f"{name!r} is not a webhook switch")
        setattr(hooks.switches, name, value)
    return web.json_response(_webhook_state(request))


async def drain(request: web.Request) -> web.Response:
    await request.app[SIM].drain_webhooks()
    return web.json_response(_webhook_state(request))


def _webhook_state(request: web.Request) -> dict[str, Any]:
    hooks = request.app[SIM].hooks
    return {
        "switches": asdict(hooks.switches),
        "attempts": [asdict(attempt) for attempt in hooks.attempts],
        "dropped": [delivery.identifier for delivery in hooks.dropped],
        "events": len(hooks.events),
    }


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body = await request.json()
    if not isinstance(body, dict):
        raise TypeError("the request body must be a JSON object")
    return body
