"""The OpenAPI 3.1 description of the HTTP API, built as a plain dict and served as JSON."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.config import Settings
from service.model import KEY_PATTERN, PROJECT_ID_PATTERN

Schema = dict[str, Any]

# Callers may send keys in any case: the server upper-cases them, then checks KEY_PATTERN.
KEY_INPUT = "^[A-Za-z][A-Za-z0-9_]*-[1-9][0-9]*$"
BEARER: list[Schema] = [{"bearer": []}]
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
`body_too_large` on any route. Bearer tokens are checked only when API_TOKENS is set."""


def document(settings: Settings) -> Schema:
    return {
        "openapi": "3.1.0",
        # The version of the API, as in /api/v1, not of the package.
        "info": {"title": "jira-status-cache", "version": "1", "description": ABOUT},
        "paths": probe_paths() | issue_paths(settings) | link_paths() | hook_paths(),
        "components": {
            "schemas": issue_schemas() | service_schemas(),
            "securitySchemes": {"bearer": bearer()},
        },
    }


def bearer() -> Schema:
    about = "one of API_TOKENS, checked only when it is set; the cron route also takes CRON_SECRET"
    return {"type": "http", "scheme": "bearer", "description": about}


async def get_openapi(request: Request) -> Response:
    return JSONResponse(document(request.state.settings))


# Schemas


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


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


def count() -> Schema:
    return {"type": "integer", "minimum": 0}


def choice(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def issue_schemas() -> dict[str, Schema]:
    key, stamp = text(pattern=KEY_PATTERN.pattern), text(format="date-time")
    project_id = text(pattern=PROJECT_ID_PATTERN.pattern)
    return {
        "Status": record(
            id=text(), name=text(), category=choice("new", "indeterminate", "done", "unknown")
        ),
        "Assignee": record(account_id=text(), display_name=text()),
        "Issue": record(
            key=key,
            id=text(pattern="^[0-9]+$"),
            status=nullable(ref("Status")),
            summary=nullable(text()),
            assignee=nullable(ref("Assignee")),
            priority=nullable(text()),
            jira_updated_at=stamp,
            fetched_at=stamp,
            # Counted from when the issue was last known current: its own read, or a
            # later successful sync round of its project that found it unchanged.
            age_seconds={
                "type": "number",
                "minimum": 0,
                "description": "seconds since the issue was last verified current: the later"
                " of its own read (fetched_at) and its Jira project's last successful sync",
            },
            stale={"type": "boolean", "description": "age_seconds is over JIRA_CACHE_TTL"},
            source=choice("webhook", "poll", "refresh", "sync"),
            state=choice("ok", "not_found", "deleted", "error"),
            error=nullable(text()),
        ),
        "IssueBatch": record(issues=array(ref("Issue")), missing=array(key)),
        "Link": record(
            key=key,
            linked_at=stamp,
            state=nullable(choice("not_found")),
            issue=nullable(ref("Issue")),
        ),
        "LinkList": record(project_id=project_id, links=array(ref("Link"))),
        "LinkResult": record(project_id=project_id, key=key, created={"type": "boolean"}),
    }


def webhook_health() -> Schema:
    """The fields of health.Verdict.as_json."""
    count = {"type": "integer", "minimum": 0}
    return record(
        state=choice("ok", "missing", "silent", "unconfigured", "unknown"),
        last_delivery_at=nullable(text(format="date-time")),
        webhook_share_last_hour=nullable({"type": "number", "minimum": 0, "maximum": 1}),
        changes_last_hour={"type": "object", "additionalProperties": count},
        missed_last_hour=count,
        missing_projects=array(text()),
    )


def report_properties() -> dict[str, Schema]:
    """The fields of refresh.Report.as_json."""
    outcomes = ("requested", "refreshed", "unchanged", "not_found", "failed")
    errors = array(record(key=text(), error=text()))
    return {name: count() for name in outcomes} | {"errors": errors, "duration_ms": count()}


def service_schemas() -> dict[str, Schema]:
    readiness = record(
        status=choice("ready", "unavailable"),
        database=choice("ok", "unreachable"),
        pending_migrations=array(text()),
    )
    outcome = choice("applied", "stale", "duplicate", "ignored", "due")
    return {
        "Report": record(**report_properties()),
        "ProjectReport": record(project_id=text(), **report_properties()),
        "Health": record(
            status=choice("ok"),
            jira=choice("ok", "degraded", "unconfigured"),
            webhooks=webhook_health(),
        ),
        "Readiness": readiness | {"required": ["status", "database"]},
        "WebhookEvent": webhook_event(),
        "WebhookOutcome": record(outcome=outcome),
        "DeadLetters": record(dead_letters=array(dead_letter())),
        "Error": error_body(),
    }


def webhook_event() -> Schema:
    """Jira's event: only `webhookEvent` is required, since events other than an issue's are
    answered `ignored` or `due`, whatever else they hold."""
    about = (
        "An issue event must carry `issue` with `id`, `key` and `fields.updated`, else 400"
        " (`unusable_payload`); `fields.status`, `summary`, `assignee` and `priority` are kept"
        " when present, a changelog `Key` item records a move, `timestamp` (ms) dates a delete."
    )
    example = {"webhookEvent": "jira:issue_updated", "timestamp": 1795000000000}
    return {
        "type": "object",
        "required": ["webhookEvent"],
        "properties": {"webhookEvent": text()},
        "description": about,
        "examples": [example | {"issue": EXAMPLE_ISSUE}],
    }


def dead_letter() -> Schema:
    return record(
        id={"type": "integer"},
        delivery_id=nullable(text()),
        error=text(),
        received_at=text(format="date-time"),
        body=text(),
    )


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
    metrics = {"200": scraped, "503": unavailable("database_unavailable")}
    described = {"200": answer("this document", {"type": "object"})}
    return {
        "/healthz": {"get": operation("healthz", "Liveness", health, security=PUBLIC)},
        "/readyz": {"get": operation("readyz", "Readiness", ready, security=PUBLIC)},
        "/metrics": {"get": operation("metrics", "Metrics", metrics, security=PUBLIC)},
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
        "201": answer("the link was created; the key is tracked", ref("LinkResult")),
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
        "200": answer("what reading the project's keys from Jira did", ref("ProjectReport")),
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
        "200": answer("what the poll cycle did", ref("Report")),
        "502": jira_failed(),
        "503": unavailable("database_unavailable", "jira_not_configured"),
    }
    letters = {
        "200": answer("the newest unusable deliveries first", ref("DeadLetters")),
        "400": fail("invalid limit", "invalid_limit"),
        "503": unavailable("database_unavailable"),
    }
    limit = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
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
            )
        },
    }


def webhook() -> Schema:
    """Jira's webhook: it cannot send our tokens, so it proves itself with its own secret."""
    responses = {
        "200": answer("the delivery was verified and handled", ref("WebhookOutcome")),
        "400": fail(
            "the body is not a usable Jira event (kept as a dead letter)", "unusable_payload"
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
