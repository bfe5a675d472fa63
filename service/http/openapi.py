"""The OpenAPI 3.1 description of the HTTP API, built as a plain dict and served as JSON."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import shapes
from service.config import Settings
from service.model import KEY_PATTERN, PROJECT_ID_PATTERN

Schema = dict[str, Any]

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
`body_too_large` on any route. Bearer tokens: API routes take an API or admin token (checked
only when API_TOKENS or ADMIN_TOKENS is set), dead letters only an admin token, the cron route
also CRON_SECRET, /metrics METRICS_TOKEN when it is set; the webhook proves itself by its own
secret; /healthz, /readyz and /openapi.json are open. A subscription POSTs each matching
change, signed `X-Hub-Signature: sha256=<HMAC of the body>`, to a host the operator allows."""


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
            "schemas": shapes.schemas(REF)
            | link_schemas()
            | service_schemas()
            | change_schemas()
            | subscription_schemas(settings),
            "securitySchemes": {"bearer": bearer()},
        },
    }


def bearer() -> Schema:
    about = (
        "API_TOKENS or ADMIN_TOKENS for API routes, ADMIN_TOKENS for dead letters, also"
        " CRON_SECRET for the cron route, METRICS_TOKEN for /metrics when set"
    )
    return {"type": "http", "scheme": "bearer", "description": about}


async def get_openapi(request: Request) -> Response:
    return JSONResponse(document(request.state.settings))


# Schemas


def ref(name: str) -> Schema:
    return {"$ref": REF.format(name=name)}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def record(**properties: Schema) -> Schema:
    """A closed object whose properties are all required."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def text(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def choice(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def link_schemas() -> dict[str, Schema]:
    """The answers that hold issues; the Issue itself is a shape (service.shapes)."""
    key, stamp = text(pattern=KEY_PATTERN.pattern), text(format="date-time")
    project_id = text(pattern=PROJECT_ID_PATTERN.pattern)
    return {
        "IssueBatch": record(issues=array(ref("Issue")), missing=array(key)),
        "Link": record(
            key=key,
            linked_at=stamp,
            state=nullable(choice("not_found")),
            issue=nullable(ref("Issue")),
        ),
        "LinkList": record(project_id=project_id, links=array(ref("Link"))),
        "LinkResult": record(
            project_id=project_id,
            key=key,
            created={"type": "boolean"},
            state=choice("ok", "not_found", "deleted", "error", "pending"),
            issue=nullable(ref("Issue")),
        ),
    }


def webhook_health() -> Schema:
    """The fields of health.Verdict.as_json."""
    count = {"type": "integer", "minimum": 0}
    return record(
        state=choice("ok", "missing", "partial", "silent", "unconfigured", "unknown"),
        last_delivery_at=nullable(text(format="date-time")),
        webhook_share_last_hour=nullable({"type": "number", "minimum": 0, "maximum": 1}),
        changes_last_hour={"type": "object", "additionalProperties": count},
        missed_last_hour=count,
        missing_projects=array(text()),
        uncovered_projects=array(text()),
    )


def freshness() -> Schema:
    """The fields of freshness.Freshness.as_json."""
    seconds = {"type": "number"}
    project = record(
        last_success_at=nullable(text(format="date-time")),
        lag_seconds=nullable(seconds),
        error=nullable(text()),
        unknown_to_jira={"type": "boolean"},
    )
    states = ("stalled", "failing", "partial", "lagging", "skewed", "unknown_projects")
    return record(
        state=choice("ok", "off", "unknown", *states),
        problems={
            "type": "object",
            "properties": {state: text() for state in states},
            "additionalProperties": False,
        },
        jira_clock_skew_seconds=nullable(seconds),
        index_lag_seconds=seconds,
        sync_overlap_seconds=seconds,
        uncovered_projects=array(text()),
        missed_webhooks_last_hour={"type": "integer", "minimum": 0},
        stalled_projects=array(text()),
        projects={"type": "object", "additionalProperties": project},
    )


def service_schemas() -> dict[str, Schema]:
    readiness = record(
        status=choice("ready", "unavailable"),
        database=choice("ok", "unreachable"),
        pending_migrations=array(text()),
    )
    outcome = choice("applied", "stale", "duplicate", "ignored", "due")
    return {
        "Health": record(
            status=choice("ok"),
            jira=choice("ok", "degraded", "unconfigured"),
            webhooks=webhook_health(),
            freshness=freshness(),
        ),
        "Readiness": readiness | {"required": ["status", "database"]},
        "WebhookEvent": webhook_event(),
        "WebhookOutcome": record(outcome=outcome),
        "Error": error_body(),
    }


def webhook_event() -> Schema:
    """Jira's event: only `webhookEvent` is required, since events other than an issue's are
    answered `ignored` or `due`, whatever else they hold."""
    about = (
        "An issue event with `issue.id`, `key` and `fields.updated` is applied; one that names"
        " the issue (id or key) but lacks fields is accepted as `due` and the issue read from"
        " Jira soon; one naming no issue, or a malformed id or key, is 400 (`unusable_payload`)."
        " `fields.status`, `summary`, `assignee` and `priority` are kept when present, a"
        " changelog `Key` item records a move, `timestamp` (ms) dates a delete."
    )
    example = {"webhookEvent": "jira:issue_updated", "timestamp": 1795000000000}
    return {
        "type": "object",
        "required": ["webhookEvent"],
        "properties": {"webhookEvent": text()},
        "description": about,
        "examples": [example | {"issue": EXAMPLE_ISSUE}],
    }


def error_body(*codes: str) -> Schema:
    return record(error=record(code=choice(*codes) if codes else text(), message=text()))


# Responses


def answer(description: str, schema: Schema | None = None, headers: Schema | None = None) -> Schema:
    found: Schema = {"description": description}
    if schema is not None:
        found["content"] = {"application/json": {"schema": schema}}
    return found | ({"headers": headers} if headers else {})


def fail(description: str, *codes: str, headers: Schema | None = None) -> Schema:
    return answer(description, error_body(*codes), headers)


def unavailable(*codes: str) -> Schema:
    retry = {"Retry-After": {"schema": text(pattern="^[0-9]+$"), "description": "seconds"}}
    return fail("PostgreSQL or Jira is unavailable; retry later", *codes, headers=retry)


def missing(*codes: str) -> Schema:
    """A 404 of a path with parameters: one that is empty or holds a slash or a line break
    leaves the path matching no route."""
    about = "not found (`not_found`: a path parameter was empty or held a slash or line break)"
    return fail(about, *codes, "not_found")


def jira_failed() -> Schema:
    return fail(
        "Jira refused our credentials or answered nonsense", "jira_auth_failed", "jira_error"
    )


def guarded(responses: dict[str, Schema]) -> dict[str, Schema]:
    """The responses of a route that answers 401 without an accepted bearer token."""
    challenge = {"WWW-Authenticate": {"schema": text(), "description": "Bearer"}}
    return responses | {
        "401": fail("no or unknown bearer token", "unauthorized", headers=challenge)
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
    metrics = guarded({"200": scraped, "503": unavailable("database_unavailable")})
    described = {"200": answer("this document", {"type": "object"})}
    return {
        "/healthz": {"get": operation("healthz", "Liveness", health, security=PUBLIC)},
        "/readyz": {"get": operation("readyz", "Readiness", ready, security=PUBLIC)},
        "/metrics": {"get": operation("metrics", "Metrics (METRICS_TOKEN when set)", metrics)},
        "/openapi.json": {"get": operation("openapi", "This document", described, security=PUBLIC)},
    }


def issue_paths(settings: Settings) -> Schema:
    down = unavailable("database_unavailable", "jira_unavailable", "jira_slow")
    absent = missing("not_cached", "issue_not_found")
    one = {
        "200": answer("the issue, read through Jira if missing or over max_age", ref("Issue")),
        "400": fail("invalid input", "invalid_key", "invalid_max_age"),
        "404": absent,
        "502": jira_failed(),
        "503": down,
    }
    codes = ("missing_keys", "too_many_keys", "invalid_key", "invalid_max_age")
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
        "400": fail("invalid key", "invalid_key"),
        "404": missing("issue_not_found"),
        "502": jira_failed(),
        "503": unavailable("database_unavailable", "jira_unavailable", "jira_not_configured"),
    }
    return {
        "/api/v1/issues": {
            "get": operation(
                "getIssues",
                "Read many",
                guarded(many),
                keys_in_query(settings.max_batch_keys),
                max_age(),
            )
        },
        "/api/v1/issues/{key}": {
            "get": operation("getIssue", "Read one", guarded(one), key_in_path(), max_age())
        },
        "/api/v1/issues/{key}/refresh": {
            "post": operation(
                "refreshIssue", "Read one from Jira now", guarded(refreshed), key_in_path()
            )
        },
    }


def link_paths() -> Schema:
    db_down = unavailable("database_unavailable")
    listed = {
        "200": answer("the project's links, each with its cached issue", ref("LinkList")),
        "400": fail("invalid project id", "invalid_project_id"),
        "404": missing(),
        "503": db_down,
    }
    bad_link = fail("invalid project id or key", "invalid_project_id", "invalid_key")
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
        "404": missing("link_not_found"),
        "503": db_down,
    }
    refreshed = {
        "200": answer(
            "what reading the project's keys from Jira did; with complete false, what it did"
            " within REFRESH_TIMEOUT while the rest goes on",
            ref("ProjectReport"),
        ),
        "400": fail("invalid project id", "invalid_project_id"),
        "404": missing(),
        "502": jira_failed(),
        "503": unavailable("database_unavailable", "jira_unavailable", "jira_not_configured"),
    }
    project, key = project_in_path(), key_in_path()
    return {
        "/api/v1/projects/{project_id}/jira": {
            "get": operation("getLinks", "A project's links", guarded(listed), project)
        },
        "/api/v1/projects/{project_id}/jira/{key}": {
            "put": operation("putLink", "Link a key", guarded(linked), project, key),
            "delete": operation("deleteLink", "Unlink a key", guarded(unlinked), project, key),
        },
        "/api/v1/projects/{project_id}/jira/refresh": {
            "post": operation(
                "refreshProject", "Read a project's keys now", guarded(refreshed), project
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
        "503": unavailable("database_unavailable", "jira_not_configured"),
    }
    letters = {
        "200": answer(
            "the newest unusable deliveries first, bodies cut short; `next` is the `before`"
            " of the next page, null on the last",
            ref("DeadLetters"),
        ),
        "400": fail("invalid limit or cursor", "invalid_limit", "invalid_cursor"),
        "503": unavailable("database_unavailable"),
    }
    letter = {
        "200": answer("the letter with its whole body", ref("DeadLetter")),
        "400": fail("invalid id", "invalid_id"),
        "404": missing("dead_letter_not_found"),
        "503": unavailable("database_unavailable"),
    }
    limit = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
    cursor = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
    return {
        "/api/v1/cron/jira-refresh": {
            "get": operation("cronRefresh", "Poll everything due now", guarded(polled))
        },
        "/api/v1/webhooks/jira": {"post": webhook()},
        "/api/v1/webhooks/dead-letters": {
            "get": operation(
                "getDeadLetters",
                "Deliveries that could not be used",
                guarded(letters),
                parameter("query", "limit", limit, "how many", required=False),
                parameter("query", "before", cursor, "only letters older than this id", False),
            )
        },
        "/api/v1/webhooks/dead-letters/{id}": {
            "get": operation(
                "getDeadLetter",
                "One dead letter, whole",
                guarded(letter),
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
            "unusable_payload",
        ),
        "401": fail("bad or missing signature", "invalid_signature", "missing_signature"),
        "403": fail("JIRA_WEBHOOK_SECRET is not set", "webhooks_disabled"),
        "413": fail("the body is over WEBHOOK_MAX_BODY_BYTES", "body_too_large"),
        "503": unavailable("database_unavailable"),
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
    body = {"required": True, "content": {"application/json": {"schema": ref("WebhookEvent")}}}
    return found | {"requestBody": body}


# The change log


CURSOR = "^[0-9a-f]{32}$"


def change_schemas() -> dict[str, Schema]:
    """An entry of the change log, and a page of them."""
    fields = {
        "type": "object",
        "description": "each served field that changed: [old, new]; a newly cached issue"
        " lists what it has from null, with state [null, ok]",
        "additionalProperties": {"type": "array", "minItems": 2, "maxItems": 2},
        "propertyNames": choice("key", "status", "summary", "assignee", "priority", "state"),
    }
    return {
        "Change": record(
            cursor=text(pattern=CURSOR),
            issue_id=text(pattern="^[0-9]+$"),
            key=text(pattern=KEY_PATTERN.pattern),
            at=text(format="date-time"),
            source=choice("webhook", "sync", "poll", "refresh"),
            fields=fields,
            issue=ref("Issue"),
        ),
        "ChangePage": record(changes=array(ref("Change")), next=text(pattern=CURSOR)),
    }


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
    codes = ("invalid_cursor", "invalid_from", "invalid_project_id", "invalid_key")
    bad = fail("invalid input", *codes, "invalid_limit", "missing_keys", "too_many_keys")
    expired = fail("entries after the cursor were pruned: read afresh", "cursor_expired")
    page = {
        "200": answer("the readable entries after the cursor, oldest first", ref("ChangePage")),
        "400": bad,
        "410": expired,
        "503": unavailable("database_unavailable"),
    }
    events = {"text/event-stream": {"schema": text()}}
    about = "`event: change`, `id:` the cursor, `data:` a Change as JSON; comment pings"
    stream = page | {
        "200": {"description": about, "content": events},
        "400": fail("invalid input", *codes, "missing_keys", "too_many_keys"),
    }
    limit = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    resume = parameter("header", "Last-Event-ID", text(pattern=CURSOR), "resume after it", False)
    return {
        "/api/v1/changes": {
            "get": operation(
                "getChanges",
                "Changes after a cursor",
                guarded(page),
                *change_filters(settings),
                parameter("query", "limit", limit, "at most this many", required=False),
            )
        },
        "/api/v1/changes/stream": {
            "get": operation(
                "streamChanges",
                "Changes as Server-Sent Events",
                guarded(stream),
                *change_filters(settings),
                resume,
            )
        },
    }


# Subscriptions

FIELD_NAMES = ("key", "status", "summary", "assignee", "priority", "state")


def subscription_schemas(settings: Settings) -> dict[str, Schema]:
    """A subscription as shown, with its lag, as created (with its secret), and as asked for."""
    when = nullable(text(format="date-time"))
    keys = array(text(pattern=KEY_INPUT)) | {"minItems": 1, "maxItems": settings.max_batch_keys}
    fields = array(choice(*FIELD_NAMES)) | {"minItems": 1}
    shown = {
        "id": text(pattern="^[0-9]+$"),
        "url": text(),
        "project_id": nullable(text(pattern=PROJECT_ID_PATTERN.pattern)),
        "keys": nullable(array(text(pattern=KEY_PATTERN.pattern))),
        "fields": nullable(array(choice(*FIELD_NAMES))),
        "created_at": text(format="date-time"),
        "cursor": text(pattern=CURSOR),
        "delivered": {"type": "integer", "minimum": 0},
        "last_success_at": when,
        "last_error": nullable(text()),
        "last_error_at": when,
        "paused": {"type": "boolean"},
        "paused_at": when,
        "paused_reason": nullable(text()),
    }
    lag = record(entries={"type": "integer", "minimum": 0}, seconds={"type": "number"})
    asked = record(
        url=text(format="uri", examples=["https://hooks.internal.example/jira"]),
        project_id=text(pattern=PROJECT_ID_PATTERN.pattern),
        keys=keys,
        fields=fields,
    )
    return {
        "Subscription": record(**shown),
        "SubscriptionStatus": record(**shown, lag=lag),
        "NewSubscription": record(
            **shown, secret=text(description="signs every delivery; shown only here, once")
        ),
        "Subscriptions": record(subscriptions=array(ref("Subscription"))),
        "SubscriptionRequest": asked | {"required": ["url"]},
    }


def subscription_paths() -> Schema:
    gone = missing("subscription_not_found")
    bad_id = fail("invalid id", "invalid_id")
    down = unavailable("database_unavailable")
    refused = fail(
        "invalid body or URL, or a host SUBSCRIPTION_ALLOWED_HOSTS does not allow",
        "invalid_body",
        "invalid_url",
        "host_not_allowed",
        "invalid_key",
        "invalid_project_id",
    )
    one = {"400": bad_id, "404": gone, "503": down}
    number = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
    identifier = parameter("path", "id", number, "the subscription")
    body = {
        "required": True,
        "content": {"application/json": {"schema": ref("SubscriptionRequest")}},
    }
    created = answer("created; the secret is shown this once", ref("NewSubscription"))
    return {
        "/api/v1/subscriptions": {
            "get": operation(
                "listSubscriptions",
                "Every subscription",
                guarded({"200": answer("oldest first", ref("Subscriptions")), "503": down}),
            ),
            "post": operation(
                "createSubscription",
                "POST each matching change to a URL, signed",
                guarded({"201": created, "400": refused, "503": down}),
            )
            | {"requestBody": body},
        },
        "/api/v1/subscriptions/{id}": {
            "get": operation(
                "getSubscription",
                "A subscription, its lag and pause state",
                guarded(one | {"200": answer("found", ref("SubscriptionStatus"))}),
                identifier,
            ),
            "delete": operation(
                "deleteSubscription",
                "Stop and forget a subscription",
                guarded(one | {"204": answer("deleted")}),
                identifier,
            ),
        },
        "/api/v1/subscriptions/{id}/resume": {
            "post": operation(
                "resumeSubscription",
                "Deliver again from where a paused subscription stopped",
                guarded(one | {"200": answer("resumed", ref("Subscription"))}),
                identifier,
            )
        },
    }
