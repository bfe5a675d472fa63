"""The OpenAPI 3.1 description of the HTTP API, built as a plain dict and served as JSON."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import shapes
from service.config import Settings
from service.http.errors import ErrorCode
from service.http.services import services
from service.jira import event
from service.model import PROJECT_ID_PATTERN
from service.shapes import changes, links, probes

Schema = dict[str, Any]
DOCUMENTED = shapes.DOCUMENTED + links.DOCUMENTED + probes.DOCUMENTED + changes.DOCUMENTED

# Callers may send keys in any case: the server upper-cases them, then checks KEY_PATTERN.
KEY_INPUT = "^[A-Za-z][A-Za-z0-9_]*-[1-9][0-9]*$"
BEARER: list[Schema] = [{"bearer": []}]
REF = "#/components/schemas/{name}"
PUBLIC: list[Schema] = []
EXAMPLE_ISSUE = {
    "id": "10007",
    "key": "PRJ-7",
    "fields": {
        "summary": "Login fails",
        "status": {"id": "3", "name": "In Progress", "statusCategory": {"key": "indeterminate"}},
        "assignee": {"accountId": "5b10a2844c20165700ede21g", "displayName": "Mia Krystof"},
        "priority": {"name": "High"},
        "updated": "2026-11-26T05:00:00.000-0600",
    },
}
ABOUT = """\
A cache of Jira issue status. Every error answers `{"error": {"code", "message"}}`; each
operation lists the codes it can answer under each status. A path not listed here answers 404
`not_found`; a listed path called with a method it does not list answers 405
`method_not_allowed` with an `Allow` header (or 404); a body over the limit answers 413
`body_too_large` on any route, one that does not arrive within BODY_TIMEOUT 408 `body_timeout`,
a URL over 16 KiB 414 `uri_too_long`, headers over 64 KiB 431 `headers_too_large`, and what is
not HTTP at all 400 `bad_request`. Bearer tokens are a client's (`jira-status-cache client add`,
or API_TOKENS and ADMIN_TOKENS); each API route needs a scope: `read` (issues, links, changes,
the stream), `subscribe` (the client's own subscriptions), `refresh` (refresh routes, the cron
route, which also takes CRON_SECRET) or `admin` (every route, dead letters, every
subscription). An unknown token answers 401, a client without the scope 403
`insufficient_scope`, one over a per-client limit 429 with Retry-After. With no token
configured and no client made, the API is open. /metrics takes METRICS_TOKEN when it is set;
the webhook proves itself by its own secret; /healthz, /readyz and /openapi.json are open. A
subscription POSTs each matching change to a host the operator allows, signed per Standard
Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
id.timestamp.body>`) and with `X-Hub-Signature: sha256=<HMAC of the body>`."""


def document(settings: Settings) -> Schema:
    return {
        "openapi": "3.1.0",
        # The version of the API, as in /api/v1, not of the package.
        "info": {"title": "jira-status-cache", "version": "1", "description": ABOUT},
        "paths": probe_paths()
        | issue_paths(settings)
        | link_paths()
        | hook_paths()
        | change_paths(settings)
        | subscription_paths(),
        "components": {
            "schemas": shapes.schemas(REF, DOCUMENTED) | service_schemas(),
            "securitySchemes": {"bearer": bearer()},
        },
    }


def bearer() -> Schema:
    about = (
        "a client's token (client add, API_TOKENS, ADMIN_TOKENS) holding the route's scope;"
        " also CRON_SECRET for the cron route, METRICS_TOKEN for /metrics when set"
    )
    return {"type": "http", "scheme": "bearer", "description": about}


async def get_openapi(request: Request) -> Response:
    return JSONResponse(document(services(request).settings))


# Schemas


def ref(name: str) -> Schema:
    return {"$ref": REF.format(name=name)}


def text(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def choice(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def service_schemas() -> dict[str, Schema]:
    """Jira's event, as the webhook reads it: Jira's shape, not one of ours."""
    _, found = msgspec.json.schema_components((event.WebhookEvent,), ref_template=REF)
    return found


def error_body(*codes: ErrorCode) -> Schema:
    """The Error shape, its code narrowed to those this operation answers with this status."""
    narrowed = {"properties": {"error": {"properties": {"code": choice(*codes)}}}}
    return {"allOf": [ref("Error"), narrowed]}


# Responses


def answer(description: str, schema: Schema | None = None, headers: Schema | None = None) -> Schema:
    found: Schema = {"description": description}
    if schema is not None:
        found["content"] = {"application/json": {"schema": schema}}
    return found | ({"headers": headers} if headers else {})


def fail(description: str, *codes: ErrorCode, headers: Schema | None = None) -> Schema:
    return answer(description, error_body(*codes), headers)


def unavailable(*codes: ErrorCode) -> Schema:
    retry = {"Retry-After": {"schema": text(pattern="^[0-9]+$"), "description": "seconds"}}
    return fail("PostgreSQL or Jira is unavailable; retry later", *codes, headers=retry)


def missing(*codes: ErrorCode) -> Schema:
    """A 404 of a path with parameters: one that is empty or holds a slash or a line break
    leaves the path matching no route."""
    about = "not found (`not_found`: a path parameter was empty or held a slash or line break)"
    return fail(about, *codes, ErrorCode.NOT_FOUND)


def jira_failed() -> Schema:
    return fail(
        "Jira refused our credentials or answered nonsense",
        ErrorCode.JIRA_AUTH_FAILED,
        ErrorCode.JIRA_ERROR,
    )


def guarded(responses: dict[str, Schema]) -> dict[str, Schema]:
    """The responses of a route that answers 401 without an accepted bearer token."""
    challenge = {"WWW-Authenticate": {"schema": text(), "description": "Bearer"}}
    return responses | {
        "401": fail("no or unknown bearer token", ErrorCode.UNAUTHORIZED, headers=challenge)
    }


def scoped(responses: dict[str, Schema], scope: str, *limits: ErrorCode) -> dict[str, Schema]:
    """The responses of a route a client opens with `scope` (or admin): also 403 for a client
    without it, and 429 over the client's request rate (or one of its other `limits`)."""
    retry = {"Retry-After": {"schema": text(pattern="^[0-9]+$"), "description": "seconds"}}
    lacking = f"the client lacks the scope `{scope}` (or `admin`)"
    return guarded(responses) | {
        "403": fail(lacking, ErrorCode.INSUFFICIENT_SCOPE),
        "429": fail("over a per-client limit", ErrorCode.RATE_LIMITED, *limits, headers=retry),
    }


# Operations


def operation(
    name: str, summary: str, responses: Schema, *parameters: Schema, security: Any = BEARER
) -> Schema:
    found = {"operationId": name, "summary": summary, "security": security}
    if parameters:
        found["parameters"] = list(parameters)
    return found | {"responses": responses}


def parameter(where: str, name: str, schema: Schema, about: str, required: bool = True) -> Schema:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": about}


def key_in_path() -> Schema:
    key = text(pattern=KEY_INPUT, examples=["PRJ-7", "prj-7"])
    return parameter("path", "key", key, "a Jira key, in any case")


def project_in_path() -> Schema:
    project_id = text(pattern=PROJECT_ID_PATTERN.pattern, examples=["checkout"])
    return parameter("path", "project_id", project_id, "the caller's project id")


def max_age() -> Schema:
    seconds = {"type": "number", "minimum": 0, "maximum": 10**9, "examples": [0, 60]}
    about = "read through Jira any entry fetched more than this many seconds ago"
    return parameter("query", "max_age", seconds, about, required=False)


def keys_in_query(limit: int) -> Schema:
    keys = array(text(pattern=KEY_INPUT)) | {"minItems": 1, "maxItems": limit}
    keys["examples"] = [["PRJ-7", "prj-2", "PRJ-404"]]
    found = parameter("query", "keys", keys, "comma-separated Jira keys, e.g. A-1,B-2")
    return found | {"style": "form", "explode": False}


def probe_paths() -> Schema:
    health = {"200": answer("the process is alive", ref("Health"))}
    ready = {
        "200": answer("PostgreSQL answers and every migration is applied", ref("Readiness")),
        "503": answer("PostgreSQL is unreachable or a migration is pending", ref("Readiness")),
    }
    prometheus = {"text/plain": {"schema": text()}}
    scraped = {"description": "Prometheus text exposition format", "content": prometheus}
    # With PostgreSQL down it still answers, jsc_database_up 0: what alerts on it read.
    metrics = guarded({"200": scraped})
    described = {"200": answer("this document", {"type": "object"})}
    return {
        "/healthz": {"get": operation("healthz", "Liveness", health, security=PUBLIC)},
        "/readyz": {"get": operation("readyz", "Readiness", ready, security=PUBLIC)},
        "/metrics": {"get": operation("metrics", "Metrics (METRICS_TOKEN when set)", metrics)},
        "/openapi.json": {"get": operation("openapi", "This document", described, security=PUBLIC)},
    }


def issue_paths(settings: Settings) -> Schema:
    down = unavailable(
        ErrorCode.DATABASE_UNAVAILABLE, ErrorCode.JIRA_UNAVAILABLE, ErrorCode.JIRA_SLOW
    )
    absent = missing(ErrorCode.NOT_CACHED, ErrorCode.ISSUE_NOT_FOUND)
    one = {
        "200": answer("the issue, read through Jira if missing or over max_age", ref("Issue")),
        "400": fail("invalid input", ErrorCode.INVALID_KEY, ErrorCode.INVALID_MAX_AGE),
        "404": absent,
        "502": jira_failed(),
        "503": down,
    }
    codes = (
        ErrorCode.MISSING_KEYS,
        ErrorCode.TOO_MANY_KEYS,
        ErrorCode.INVALID_KEY,
        ErrorCode.INVALID_MAX_AGE,
    )
    many = {
        "200": answer(
            "the cached issues and the keys neither cache nor Jira has", ref("IssueBatch")
        ),
        "400": fail("invalid input", *codes),
        "502": jira_failed(),
        "503": down,
    }
    refreshed = {
        "200": answer("the issue, just read from Jira", ref("Issue")),
        "400": fail("invalid key", ErrorCode.INVALID_KEY),
        "404": missing(ErrorCode.ISSUE_NOT_FOUND),
        "502": jira_failed(),
        "503": unavailable(
            ErrorCode.DATABASE_UNAVAILABLE,
            ErrorCode.JIRA_UNAVAILABLE,
            ErrorCode.JIRA_NOT_CONFIGURED,
        ),
    }
    return {
        "/api/v1/issues": {
            "get": operation(
                "getIssues",
                "Read many",
                scoped(many, "read"),
                keys_in_query(settings.max_batch_keys),
                max_age(),
            )
        },
        "/api/v1/issues/{key}": {
            "get": operation("getIssue", "Read one", scoped(one, "read"), key_in_path(), max_age())
        },
        "/api/v1/issues/{key}/refresh": {
            "post": operation(
                "refreshIssue",
                "Read one from Jira now",
                scoped(refreshed, "refresh"),
                key_in_path(),
            )
        },
    }


def link_paths() -> Schema:
    db_down = unavailable(ErrorCode.DATABASE_UNAVAILABLE)
    listed = {
        "200": answer("the project's links, each with its cached issue", ref("LinkList")),
        "400": fail("invalid project id", ErrorCode.INVALID_PROJECT_ID),
        "404": missing(),
        "503": db_down,
    }
    bad_link = fail(
        "invalid project id or key", ErrorCode.INVALID_PROJECT_ID, ErrorCode.INVALID_KEY
    )
    linked = {
        "200": answer("the link existed", ref("LinkResult")),
        "201": answer(
            "the link was created and the issue read; the key is tracked", ref("LinkResult")
        ),
        "400": bad_link,
        "404": missing(),
        "503": db_down,
    }
    unlinked = {
        "204": answer("unlinked"),
        "400": bad_link,
        "404": missing(ErrorCode.LINK_NOT_FOUND),
        "503": db_down,
    }
    refreshed = {
        "200": answer(
            "what reading the project's keys from Jira did; with complete false, what it did"
            " within REFRESH_TIMEOUT while the rest goes on",
            ref("ProjectReport"),
        ),
        "400": fail("invalid project id", ErrorCode.INVALID_PROJECT_ID),
        "404": missing(),
        "502": jira_failed(),
        "503": unavailable(
            ErrorCode.DATABASE_UNAVAILABLE,
            ErrorCode.JIRA_UNAVAILABLE,
            ErrorCode.JIRA_NOT_CONFIGURED,
        ),
    }
    project, key = project_in_path(), key_in_path()
    return {
        "/api/v1/projects/{project_id}/jira": {
            "get": operation("getLinks", "A project's links", scoped(listed, "read"), project)
        },
        "/api/v1/projects/{project_id}/jira/{key}": {
            "put": operation("putLink", "Link a key", scoped(linked, "read"), project, key),
            "delete": operation(
                "deleteLink", "Unlink a key", scoped(unlinked, "read"), project, key
            ),
        },
        "/api/v1/projects/{project_id}/jira/refresh": {
            "post": operation(
                "refreshProject", "Read a project's keys now", scoped(refreshed, "refresh"), project
            )
        },
    }


def hook_paths() -> Schema:
    # A poll cycle waits out Jira being down or refusing us: only its nonsense is a 502.
    polled = {
        "200": answer(
            "what the poll cycle did; with complete false, what it did within REFRESH_TIMEOUT"
            " while the cycle goes on",
            ref("Report"),
        ),
        "502": jira_failed(),
        "503": unavailable(ErrorCode.DATABASE_UNAVAILABLE, ErrorCode.JIRA_NOT_CONFIGURED),
    }
    letters = {
        "200": answer(
            "the newest unusable deliveries first, bodies cut short; `next` is the `before`"
            " of the next page, null on the last",
            ref("DeadLetters"),
        ),
        "400": fail("invalid limit or cursor", ErrorCode.INVALID_LIMIT, ErrorCode.INVALID_CURSOR),
        "503": unavailable(ErrorCode.DATABASE_UNAVAILABLE),
    }
    letter = {
        "200": answer("the letter with its whole body", ref("DeadLetter")),
        "400": fail("invalid id", ErrorCode.INVALID_ID),
        "404": missing(ErrorCode.DEAD_LETTER_NOT_FOUND),
        "503": unavailable(ErrorCode.DATABASE_UNAVAILABLE),
    }
    limit = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
    cursor = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
    return {
        "/api/v1/cron/jira-refresh": {
            "get": operation("cronRefresh", "Poll everything due now", scoped(polled, "refresh"))
        },
        "/api/v1/webhooks/jira": {"post": webhook()},
        "/api/v1/webhooks/dead-letters": {
            "get": operation(
                "getDeadLetters",
                "Deliveries that could not be used",
                scoped(letters, "admin"),
                parameter("query", "limit", limit, "how many", required=False),
                parameter("query", "before", cursor, "only letters older than this id", False),
            )
        },
        "/api/v1/webhooks/dead-letters/{id}": {
            "get": operation(
                "getDeadLetter",
                "One dead letter, whole",
                scoped(letter, "admin"),
                parameter("path", "id", cursor, "the letter's id"),
            )
        },
    }


def webhook() -> Schema:
    """Jira's webhook: it cannot send our tokens, so it proves itself with its own secret."""
    responses = {
        "200": answer("the delivery was verified and handled", ref("WebhookOutcome")),
        "400": fail(
            "the body is not JSON, not a Jira event, or names no usable issue id or key"
            " (kept as a dead letter)",
            ErrorCode.UNUSABLE_PAYLOAD,
        ),
        "401": fail(
            "bad or missing signature", ErrorCode.INVALID_SIGNATURE, ErrorCode.MISSING_SIGNATURE
        ),
        "403": fail("JIRA_WEBHOOK_SECRET is not set", ErrorCode.WEBHOOKS_DISABLED),
        "413": fail("the body is over WEBHOOK_MAX_BODY_BYTES", ErrorCode.BODY_TOO_LARGE),
        "503": unavailable(ErrorCode.DATABASE_UNAVAILABLE),
    }
    signature = "METHOD=HEX: HMAC of the raw body with JIRA_WEBHOOK_SECRET, sha256/384/512"
    found = operation(
        "receiveWebhook",
        "Receive a Jira webhook",
        responses,
        parameter("header", "X-Hub-Signature", text(), signature, required=False),
        parameter("header", "X-Atlassian-Webhook-Identifier", text(), "dedupes retries", False),
        parameter("query", "secret", text(), "JIRA_WEBHOOK_SECRET, when unsigned", False),
        security=PUBLIC,
    )
    example = {"webhookEvent": "jira:issue_updated", "timestamp": 1795000000000}
    jira_json = {"schema": ref("WebhookEvent"), "example": example | {"issue": EXAMPLE_ISSUE}}
    return found | {"requestBody": {"required": True, "content": {"application/json": jira_json}}}


# The change log


CURSOR = "^[0-9a-f]{32}$"


def change_filters(settings: Settings) -> list[Schema]:
    project_id = text(pattern=PROJECT_ID_PATTERN.pattern, examples=["checkout"])
    start = choice("now", "beginning")
    return [
        parameter("query", "after", text(pattern=CURSOR), "a cursor: entries after it", False),
        parameter("query", "from", start, "without after: now (default) or beginning", False),
        parameter("query", "project_id", project_id, "only the issues it links", False),
        keys_in_query(settings.max_batch_keys) | {"required": False},
    ]


def change_paths(settings: Settings) -> Schema:
    codes = (
        ErrorCode.INVALID_CURSOR,
        ErrorCode.INVALID_FROM,
        ErrorCode.INVALID_PROJECT_ID,
        ErrorCode.INVALID_KEY,
    )
    bad = fail(
        "invalid input",
        *codes,
        ErrorCode.INVALID_LIMIT,
        ErrorCode.MISSING_KEYS,
        ErrorCode.TOO_MANY_KEYS,
    )
    expired = fail("entries after the cursor were pruned: read afresh", ErrorCode.CURSOR_EXPIRED)
    page = {
        "200": answer("the readable entries after the cursor, oldest first", ref("ChangePage")),
        "400": bad,
        "410": expired,
        "503": unavailable(ErrorCode.DATABASE_UNAVAILABLE),
    }
    events = {"text/event-stream": {"schema": text()}}
    about = (
        "`event: change`, `id:` the cursor, `data:` a Change as JSON; comment pings; a stream"
        " that falls STREAM_BUFFER entries behind ends with `event: dropped` whose `id` is the"
        " cursor to resume after"
    )
    stream = page | {
        "200": {"description": about, "content": events},
        "400": fail("invalid input", *codes, ErrorCode.MISSING_KEYS, ErrorCode.TOO_MANY_KEYS),
        "503": unavailable(ErrorCode.DATABASE_UNAVAILABLE, ErrorCode.TOO_MANY_STREAMS),
    }
    limit = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    resume = parameter("header", "Last-Event-ID", text(pattern=CURSOR), "resume after it", False)
    return {
        "/api/v1/changes": {
            "get": operation(
                "getChanges",
                "Changes after a cursor",
                scoped(page, "read"),
                *change_filters(settings),
                parameter("query", "limit", limit, "at most this many", required=False),
            )
        },
        "/api/v1/changes/stream": {
            "get": operation(
                "streamChanges",
                "Changes as Server-Sent Events",
                scoped(stream, "read", ErrorCode.TOO_MANY_STREAMS),
                *change_filters(settings),
                resume,
            )
        },
    }


# Subscriptions


def subscription_paths() -> Schema:
    gone = missing(ErrorCode.SUBSCRIPTION_NOT_FOUND)
    bad_id = fail("invalid id", ErrorCode.INVALID_ID)
    down = unavailable(ErrorCode.DATABASE_UNAVAILABLE)
    refused = fail(
        "invalid body or URL, or a host SUBSCRIPTION_ALLOWED_HOSTS does not allow",
        ErrorCode.INVALID_BODY,
        ErrorCode.INVALID_URL,
        ErrorCode.HOST_NOT_ALLOWED,
        ErrorCode.INVALID_KEY,
        ErrorCode.INVALID_PROJECT_ID,
    )
    one = {"400": bad_id, "404": gone, "503": down}
    number = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
    identifier = parameter("path", "id", number, "the subscription")
    body = {
        "required": True,
        "content": {"application/json": {"schema": ref("SubscriptionRequest")}},
    }
    created = answer("created; the secret is shown this once", ref("NewSubscription"))
    rotated = ref("NewSubscription")
    limit = fail("the client holds CLIENT_MAX_SUBSCRIPTIONS already", ErrorCode.SUBSCRIPTION_LIMIT)
    return {
        "/api/v1/subscriptions": {
            "get": operation(
                "listSubscriptions",
                "Every subscription",
                scoped(
                    {"200": answer("oldest first", ref("Subscriptions")), "503": down}, "subscribe"
                ),
            ),
            "post": operation(
                "createSubscription",
                "POST each matching change to a URL, signed",
                scoped({"201": created, "400": refused, "409": limit, "503": down}, "subscribe"),
            )
            | {"requestBody": body},
        },
        "/api/v1/subscriptions/{id}": {
            "get": operation(
                "getSubscription",
                "A subscription, its lag and pause state",
                scoped(one | {"200": answer("found", ref("SubscriptionStatus"))}, "subscribe"),
                identifier,
            ),
            "delete": operation(
                "deleteSubscription",
                "Stop and forget a subscription",
                scoped(one | {"204": answer("deleted")}, "subscribe"),
                identifier,
            ),
        },
        "/api/v1/subscriptions/{id}/resume": {
            "post": operation(
                "resumeSubscription",
                "Deliver again from where a paused subscription stopped",
                scoped(
                    one
                    | {
                        "200": answer("resumed", ref("Subscription")),
                        "400": fail(
                            "invalid id, or its target no longer allowed (it stays paused)",
                            ErrorCode.INVALID_ID,
                            ErrorCode.HOST_NOT_ALLOWED,
                            ErrorCode.INVALID_URL,
                        ),
                    },
                    "subscribe",
                ),
                identifier,
            )
        },
        "/api/v1/subscriptions/{id}/rotate-secret": {
            "post": operation(
                "rotateSubscriptionSecret",
                "A new signing secret; the old one signs too for SUBSCRIPTION_SECRET_OVERLAP",
                scoped(
                    one | {"200": answer("rotated; the new secret shown once", rotated)},
                    "subscribe",
                ),
                identifier,
            )
        },
    }
