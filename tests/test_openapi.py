"""The OpenAPI document against the real app: real answers conform, and fuzzing finds nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import hypothesis
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jira_simulator import Simulator
from service.config import Settings
from service.http.openapi import document
from service.storage import clients
from service.storage import issues as store
from tests.conftest import app_client
from tests.factory import make_issue
from tests.live import AGE_BY_A_TTL, SECRET, jira_settings, serve
from tests.payloads import event, headers
from tests.pgproxy import PgProxy

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# An admin token opens every route, dead letters included; the API token none of those.
TOKENS: dict[str, Any] = {
    "api_tokens": frozenset({"api-token-for-tests"}),
    "admin_tokens": frozenset({TOKEN}),
}
WEBHOOK = "/api/v1/webhooks/jira"
# Stored clients of one scope each, for the 403s.
NARROW = {"read": "read-only-token-for-tests", "refresh": "refresh-only-token-for-tests"}
DOC = document(Settings())


# Real answers, one per documented status of each operation


def conforms(response: httpx.Response, template: str) -> None:
    """Assert that the answer is documented for its operation and status, and fits it."""
    operation = DOC["paths"][template][response.request.method.lower()]
    documented = operation["responses"].get(str(response.status_code))
    assert documented, f"{template} answered an undocumented {response.status_code}"
    content = documented.get("content")
    if content is None:
        assert response.content == b""
        return
    media = response.headers["content-type"].split(";")[0]
    assert media in content, f"{media} is not documented"
    if media == "application/json":
        validate(content[media]["schema"], response.json())


def validate(schema: dict[str, Any], instance: Any) -> None:
    root = schema | {"components": DOC["components"]}
    validator = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
    problems = [
        f"{error.instance_path}: {error.message}" for error in validator.iter_errors(instance)
    ]
    assert not problems, f"{json.dumps(instance)[:300]} breaks the schema: {problems}"


@dataclass
class World:
    """The app over ASGI, reading from the simulator, with tokens and a webhook secret."""

    http: httpx.AsyncClient
    sim: Simulator
    db: asyncpg.Pool
    settings: Settings

    @contextlib.asynccontextmanager
    async def variant(self, **changes: object) -> AsyncIterator[httpx.AsyncClient]:
        """The same app with other settings, its client holding the token."""
        async with app_client(self.settings, **changes) as http:
            http.headers.update(AUTH)
            yield http

    @contextlib.asynccontextmanager
    async def database_cut(self) -> AsyncIterator[httpx.AsyncClient]:
        """The app with PostgreSQL out of reach once it has started."""
        proxy = PgProxy(self.settings.database_url or "")
        async with self.variant(database_url=await proxy.start(), memo_size=0) as http:
            await proxy.cut()
            yield http

    def jira_refusing(self) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
        return self.variant(jira_api_token="wrong", jira_pat="wrong")

    def without_jira(self) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
        return self.variant(jira=None)

    async def link(self, key: str = "PRJ-1") -> None:
        assert (await self.http.put(f"/api/v1/projects/checkout/jira/{key}")).status_code == 201


@pytest.fixture
async def world(db, settings, sim) -> AsyncIterator[World]:
    sim.seed(3, ["PRJ"])
    for scope, token in NARROW.items():
        await clients.add(db, f"only-{scope}", {scope}, token)
    wired = jira_settings(settings, sim, **TOKENS)
    async with app_client(wired) as http:
        http.headers.update(AUTH)
        yield World(http, sim, db, wired)


Scenario = Callable[[World], Awaitable[httpx.Response]]
SCENARIOS: dict[tuple[str, str, str], Scenario] = {}


def scenario(template: str, method: str, status: int) -> Callable[[Scenario], Scenario]:
    def register(make: Scenario) -> Scenario:
        SCENARIOS[template, method, str(status)] = make
        return make

    return register


def wrong_token(path: str, method: str = "GET") -> Scenario:
    async def make(w: World) -> httpx.Response:
        return await w.http.request(method, path, headers={"Authorization": "Bearer nope"})

    make.path, make.method = path, method  # type: ignore[attr-defined]  (for 403 and 429)
    return make


def plain(path: str, method: str = "GET") -> Scenario:
    async def make(w: World) -> httpx.Response:
        return await w.http.request(method, path)

    return make


def cut(path: str, method: str = "GET") -> Scenario:
    async def make(w: World) -> httpx.Response:
        async with w.database_cut() as http:
            return await http.request(method, path)

    return make


def jiraless(path: str, method: str = "GET") -> Scenario:
    async def make(w: World) -> httpx.Response:
        async with w.without_jira() as http:
            return await http.request(method, path)

    return make


def refused(path: str, method: str = "GET") -> Scenario:
    async def make(w: World) -> httpx.Response:
        async with w.jira_refusing() as http:
            return await http.request(method, path)

    return make


ISSUE, ISSUES, REFRESH = "/api/v1/issues/{key}", "/api/v1/issues", "/api/v1/issues/{key}/refresh"
LINKS, LINK = "/api/v1/projects/{project_id}/jira", "/api/v1/projects/{project_id}/jira/{key}"
PROJECT_REFRESH, CRON = "/api/v1/projects/{project_id}/jira/refresh", "/api/v1/cron/jira-refresh"
LETTERS, LETTER = "/api/v1/webhooks/dead-letters", "/api/v1/webhooks/dead-letters/{id}"

scenario("/healthz", "get", 200)(plain("/healthz"))
scenario("/readyz", "get", 200)(plain("/readyz"))
scenario("/readyz", "get", 503)(cut("/readyz"))
scenario("/metrics", "get", 200)(plain("/metrics"))
scenario(LETTER, "get", 400)(plain("/api/v1/webhooks/dead-letters/0"))
scenario(LETTER, "get", 401)(wrong_token("/api/v1/webhooks/dead-letters/1"))
scenario(LETTER, "get", 404)(plain("/api/v1/webhooks/dead-letters/1"))
scenario(LETTER, "get", 503)(cut("/api/v1/webhooks/dead-letters/1"))
scenario("/openapi.json", "get", 200)(wrong_token("/openapi.json"))

scenario(ISSUES, "get", 200)(plain("/api/v1/issues?keys=PRJ-1,prj-2,PRJ-404"))
scenario(ISSUES, "get", 400)(plain("/api/v1/issues?keys=,"))
scenario(ISSUES, "get", 401)(wrong_token("/api/v1/issues?keys=PRJ-1"))
scenario(ISSUES, "get", 502)(refused("/api/v1/issues?keys=PRJ-1"))
scenario(ISSUES, "get", 503)(cut("/api/v1/issues?keys=PRJ-1"))
scenario(ISSUE, "get", 400)(plain("/api/v1/issues/PRJ-01"))
scenario(ISSUE, "get", 401)(wrong_token("/api/v1/issues/PRJ-1"))
scenario(ISSUE, "get", 404)(plain("/api/v1/issues/PRJ-404"))
scenario(ISSUE, "get", 502)(refused("/api/v1/issues/PRJ-1"))
scenario(REFRESH, "post", 200)(plain("/api/v1/issues/prj-1/refresh", "POST"))
scenario(REFRESH, "post", 400)(plain("/api/v1/issues/PRJ/refresh", "POST"))
scenario(REFRESH, "post", 401)(wrong_token("/api/v1/issues/PRJ-1/refresh", "POST"))
scenario(REFRESH, "post", 404)(plain("/api/v1/issues/PRJ-404/refresh", "POST"))
scenario(REFRESH, "post", 502)(refused("/api/v1/issues/PRJ-1/refresh", "POST"))
scenario(REFRESH, "post", 503)(jiraless("/api/v1/issues/PRJ-1/refresh", "POST"))

scenario(LINKS, "get", 400)(plain("/api/v1/projects/a%20b/jira"))
scenario(LINKS, "get", 401)(wrong_token("/api/v1/projects/checkout/jira"))
scenario(LINKS, "get", 404)(plain("/api/v1/projects//jira"))
scenario(LINKS, "get", 503)(cut("/api/v1/projects/checkout/jira"))
scenario(LINK, "put", 201)(plain("/api/v1/projects/checkout/jira/prj-1", "PUT"))
scenario(LINK, "put", 400)(plain("/api/v1/projects/checkout/jira/PRJ-1-1", "PUT"))
scenario(LINK, "put", 401)(wrong_token("/api/v1/projects/checkout/jira/PRJ-1", "PUT"))
scenario(LINK, "put", 404)(plain("/api/v1/projects//jira/PRJ-1", "PUT"))
scenario(LINK, "put", 503)(cut("/api/v1/projects/checkout/jira/PRJ-1", "PUT"))
scenario(LINK, "delete", 400)(plain("/api/v1/projects/a%20b/jira/PRJ-1", "DELETE"))
scenario(LINK, "delete", 401)(wrong_token("/api/v1/projects/checkout/jira/PRJ-1", "DELETE"))
scenario(LINK, "delete", 404)(plain("/api/v1/projects/checkout/jira/PRJ-1", "DELETE"))
scenario(LINK, "delete", 503)(cut("/api/v1/projects/checkout/jira/PRJ-1", "DELETE"))
scenario(PROJECT_REFRESH, "post", 400)(plain("/api/v1/projects/a%20b/jira/refresh", "POST"))
scenario(PROJECT_REFRESH, "post", 401)(wrong_token("/api/v1/projects/p/jira/refresh", "POST"))
scenario(PROJECT_REFRESH, "post", 404)(plain("/api/v1/projects//jira/refresh", "POST"))
scenario(PROJECT_REFRESH, "post", 503)(jiraless("/api/v1/projects/p/jira/refresh", "POST"))

scenario(CRON, "get", 401)(wrong_token("/api/v1/cron/jira-refresh"))
scenario(CRON, "get", 503)(jiraless("/api/v1/cron/jira-refresh"))
scenario(LETTERS, "get", 400)(plain("/api/v1/webhooks/dead-letters?limit=%C2%B2"))
scenario(LETTERS, "get", 401)(wrong_token(LETTERS))
scenario(LETTERS, "get", 503)(cut("/api/v1/webhooks/dead-letters"))
CHANGES, STREAM = "/api/v1/changes", "/api/v1/changes/stream"
scenario(CHANGES, "get", 400)(plain("/api/v1/changes?after=nope"))
scenario(CHANGES, "get", 401)(wrong_token("/api/v1/changes"))
scenario(CHANGES, "get", 503)(cut("/api/v1/changes"))
scenario(STREAM, "get", 400)(plain("/api/v1/changes/stream?from=then"))
scenario(STREAM, "get", 401)(wrong_token("/api/v1/changes/stream"))
scenario(STREAM, "get", 503)(cut("/api/v1/changes/stream"))


@scenario(ISSUE, "get", 200)
async def cached_issue(w: World) -> httpx.Response:
    await store.upsert_issues(w.db, [make_issue(assignee=None)], "webhook")
    return await w.http.get("/api/v1/issues/prj-7?max_age=3600")


@scenario(ISSUE, "get", 503)
async def issue_with_jira_down(w: World) -> httpx.Response:
    w.sim.fail_next(10, 503)
    async with w.variant(jira_max_retries=0) as http:
        return await http.get("/api/v1/issues/PRJ-1")


@scenario(LINKS, "get", 200)
async def links(w: World) -> httpx.Response:
    await w.link("PRJ-1")
    await w.link("PRJ-404")
    await w.http.get("/api/v1/issues/PRJ-404")  # now known to be missing
    await store.upsert_issues(w.db, [make_issue(key="PRJ-1")], "poll")
    return await w.http.get("/api/v1/projects/checkout/jira")


@scenario(LINK, "put", 200)
async def link_again(w: World) -> httpx.Response:
    await w.link()
    return await w.http.put("/api/v1/projects/checkout/jira/PRJ-1")


@scenario(LINK, "delete", 204)
async def unlink(w: World) -> httpx.Response:
    await w.link()
    return await w.http.delete("/api/v1/projects/checkout/jira/PRJ-1")


@scenario(PROJECT_REFRESH, "post", 200)
async def refresh_project(w: World) -> httpx.Response:
    await w.link("PRJ-1")
    await w.link("PRJ-404")
    return await w.http.post("/api/v1/projects/checkout/jira/refresh")


@scenario(PROJECT_REFRESH, "post", 502)
async def refresh_project_with_jira_refusing(w: World) -> httpx.Response:
    await w.link()
    async with w.jira_refusing() as http:
        return await http.post("/api/v1/projects/checkout/jira/refresh")


@scenario(CRON, "get", 200)
async def cron(w: World) -> httpx.Response:
    await w.link()
    return await w.http.get("/api/v1/cron/jira-refresh")


@scenario(CRON, "get", 502)
async def cron_with_jira_confused(w: World) -> httpx.Response:
    await w.link()
    await w.db.execute(AGE_BY_A_TTL)  # the link read it: due again once a TTL passes
    w.sim.fail_next(1, 409)
    return await w.http.get("/api/v1/cron/jira-refresh")


async def deliver(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post(WEBHOOK, content=body, headers=headers(body, "d-1", SECRET))


@scenario(WEBHOOK, "post", 200)
async def webhook(w: World) -> httpx.Response:
    return await deliver(w.http, json.dumps(event()).encode())


@scenario(WEBHOOK, "post", 400)
async def unusable_webhook(w: World) -> httpx.Response:
    return await deliver(w.http, b"\x00 not JSON")


@scenario(WEBHOOK, "post", 401)
async def unsigned_webhook(w: World) -> httpx.Response:
    return await w.http.post(WEBHOOK, json=event())


@scenario(WEBHOOK, "post", 403)
async def webhook_without_secret(w: World) -> httpx.Response:
    async with w.variant(webhook_secret=None) as http:
        return await deliver(http, json.dumps(event()).encode())


@scenario(WEBHOOK, "post", 413)
async def huge_webhook(w: World) -> httpx.Response:
    async with w.variant(webhook_max_body_bytes=1024) as http:
        return await deliver(http, json.dumps(event(summary="x" * 2000)).encode())


@scenario(WEBHOOK, "post", 503)
async def webhook_with_database_down(w: World) -> httpx.Response:
    async with w.database_cut() as http:
        return await deliver(http, json.dumps(event()).encode())


@scenario(LETTERS, "get", 200)
async def dead_letters(w: World) -> httpx.Response:
    await unusable_webhook(w)
    return await w.http.get("/api/v1/webhooks/dead-letters?limit=5")


@scenario(LETTER, "get", 200)
async def dead_letter(w: World) -> httpx.Response:
    await unusable_webhook(w)
    listed = (await w.http.get(LETTERS)).json()["dead_letters"]
    return await w.http.get(f"{LETTERS}/{listed[0]['id']}")


@scenario("/metrics", "get", 401)
async def metrics_with_its_token_set(w: World) -> httpx.Response:
    async with w.variant(metrics_token="scraper-token") as http:
        return await http.get("/metrics")


@scenario(CHANGES, "get", 200)
async def changes_page(w: World) -> httpx.Response:
    await w.link("PRJ-1")
    await store.upsert_issues(w.db, [make_issue(key="PRJ-1")], "webhook")
    for _ in range(200):  # until the entry is readable; another session may hold it back
        response = await w.http.get("/api/v1/changes?from=beginning&project_id=checkout")
        if response.json()["changes"]:
            break
        await asyncio.sleep(0.01)
    return response


@scenario(STREAM, "get", 200)
async def change_stream(w: World) -> httpx.Response:
    # An event stream does not end: over a real server, read its head and hang up.
    async with (
        serve(w.settings) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH) as http,
        http.stream("GET", STREAM) as response,
    ):
        return response


def expired(path: str) -> Scenario:
    async def make(w: World) -> httpx.Response:
        cursor = (await w.http.get("/api/v1/changes")).json()["next"]
        await w.db.execute("UPDATE changes_pruned SET txid = $1::text::xid8", str(2**40))
        try:
            return await w.http.get(f"{path}?after={cursor}")
        finally:
            await w.db.execute("UPDATE changes_pruned SET txid = '0', position = 0")

    return make


scenario(CHANGES, "get", 410)(expired(CHANGES))
scenario(STREAM, "get", 410)(expired(STREAM))

SUBSCRIPTIONS = "/api/v1/subscriptions"
SUBSCRIPTION, RESUME = f"{SUBSCRIPTIONS}/{{id}}", f"{SUBSCRIPTIONS}/{{id}}/resume"
ROTATE = f"{SUBSCRIPTIONS}/{{id}}/rotate-secret"
HOOK = {"url": "http://127.0.0.1:9/hook", "keys": ["PRJ-1"], "fields": ["status"]}


async def subscribe(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(SUBSCRIPTIONS, json=HOOK)


@scenario(SUBSCRIPTIONS, "post", 201)
async def subscription(w: World) -> httpx.Response:
    async with w.variant(subscription_allowed_hosts=frozenset({"127.0.0.1:9"})) as http:
        return await subscribe(http)


@scenario(SUBSCRIPTIONS, "post", 503)
async def subscription_with_database_down(w: World) -> httpx.Response:
    proxy = PgProxy(w.settings.database_url or "")
    hosts = frozenset({"127.0.0.1:9"})
    database = await proxy.start()
    async with w.variant(database_url=database, subscription_allowed_hosts=hosts) as http:
        await proxy.cut()
        return await subscribe(http)


def on_subscription(method: str, path: str = SUBSCRIPTION) -> Scenario:
    async def make(w: World) -> httpx.Response:
        await subscription(w)
        async with w.variant(subscription_allowed_hosts=frozenset({"127.0.0.1:9"})) as http:
            listed = (await http.get(SUBSCRIPTIONS)).json()["subscriptions"]
            return await http.request(method, path.replace("{id}", listed[0]["id"]))

    return make


scenario(SUBSCRIPTIONS, "get", 200)(on_subscription("GET", SUBSCRIPTIONS))
scenario(SUBSCRIPTIONS, "get", 401)(wrong_token(SUBSCRIPTIONS))
scenario(SUBSCRIPTIONS, "get", 503)(cut(SUBSCRIPTIONS))
scenario(SUBSCRIPTIONS, "post", 400)(plain(SUBSCRIPTIONS, "POST"))
scenario(SUBSCRIPTIONS, "post", 401)(wrong_token(SUBSCRIPTIONS, "POST"))
for method, status, path in (
    ("GET", 200, SUBSCRIPTION),
    ("DELETE", 204, SUBSCRIPTION),
    ("POST", 200, RESUME),
    ("POST", 200, ROTATE),
):
    template = path
    scenario(template, method.lower(), status)(on_subscription(method, path))
    scenario(template, method.lower(), 400)(plain(path.replace("{id}", "x"), method))
    scenario(template, method.lower(), 401)(wrong_token(path.replace("{id}", "1"), method))
    scenario(template, method.lower(), 404)(plain(path.replace("{id}", "7"), method))
    scenario(template, method.lower(), 503)(cut(path.replace("{id}", "1"), method))


@scenario(SUBSCRIPTIONS, "post", 409)
async def subscription_over_the_limit(w: World) -> httpx.Response:
    hosts = frozenset({"127.0.0.1:9"})
    async with w.variant(subscription_allowed_hosts=hosts, client_max_subscriptions=0) as http:
        return await subscribe(http)


def lacking_scope(path: str, method: str, scope: str) -> Scenario:
    """A stored client's token without the route's scope: 403."""
    token = NARROW["read"] if scope != "read" else NARROW["refresh"]

    async def make(w: World) -> httpx.Response:
        return await w.http.request(method, path, headers={"Authorization": f"Bearer {token}"})

    return make


def over_rate(path: str, method: str) -> Scenario:
    """The admin token over a CLIENT_RATE of one request: its second request answers 429."""

    async def make(w: World) -> httpx.Response:
        async with w.variant(client_rate=0.01) as http:
            await http.get(CHANGES)
            return await http.request(method, path)

    return make


# Each scoped route's 403 and 429, at the concrete path of its 401 scenario.
for (template, method, status), made in list(SCENARIOS.items()):
    scope = re.search(r"scope `([a-z]+)`", json.dumps(DOC["paths"][template][method]))
    if status == "401" and scope is not None:
        path, verb = made.path, made.method  # type: ignore[attr-defined]
        scenario(template, method, 403)(lacking_scope(path, verb, scope.group(1)))
        scenario(template, method, 429)(over_rate(path, verb))


def test_every_documented_answer_has_a_scenario() -> None:
    """Each status of each operation in the document is produced by a scenario here."""
    documented = {
        (path, method, status)
        for path, item in DOC["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
    }
    assert documented == set(SCENARIOS)


@pytest.mark.parametrize("answer", sorted(SCENARIOS), ids="-".join)
async def test_real_answers_fit_the_document(world, answer) -> None:
    """A real answer of each documented status fits the schema and media type documented."""
    template, _, status = answer
    response = await SCENARIOS[answer](world)
    assert response.status_code == int(status), response.text
    conforms(response, template)
    if response.status_code == 503 and "error" in response.json():
        # Trouble that passes says when to come back; Jira not configured does not pass.
        transient = response.json()["error"]["code"] != "jira_not_configured"
        assert bool(response.headers.get("Retry-After")) == transient


async def test_served_document_is_this_one_and_public(db, settings) -> None:
    """/openapi.json needs no token and serves the document, valid for schemathesis."""
    async with app_client(settings, **TOKENS) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200 and response.json() == document(settings)
    schemathesis.openapi.from_dict(response.json()).validate()


@pytest.mark.parametrize(
    "path",
    sorted(DOC["paths"]),
)
async def test_other_methods_answer_405_with_allow(client, path) -> None:
    """A documented path called with an undocumented method answers 405, Allow and the error."""
    documented = {method.upper() for method in DOC["paths"][path]}
    url = path.replace("{key}", "PRJ-1").replace("{project_id}", "checkout").replace("{id}", "1")
    response = await client.request("PATCH", url)
    assert response.status_code == 405
    validate(DOC["components"]["schemas"]["Error"], response.json())
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert documented <= allowed <= documented | {"HEAD"}


# Generated requests against the live app

CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
        # Like most HTTP APIs, ours ignores query parameters it does not know.
        "generation": {"allow-extra-parameters": False, "with-security-parameters": False},
    }
)
SCHEMA = schemathesis.openapi.from_dict(DOC, config=CONFIG)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# An event stream never ends, and the fuzzer reads each answer to its end: the stream's
# parameters are the page's, fuzzed there.
OPERATIONS = [
    (path, method) for path, item in DOC["paths"].items() for method in item if path != STREAM
]
# Negative data needs something to break: a parameter or a body.
RUNS = [(path, method, POSITIVE) for path, method in OPERATIONS] + [
    (path, method, NEGATIVE)
    for path, method in OPERATIONS
    if {"parameters", "requestBody"} & set(DOC["paths"][path][method])
]


def sign(case: schemathesis.Case) -> None:
    """Let the webhook's bodies in: the secret in the URL, and no signature to contradict it."""
    case.query = {**(case.query or {}), "secret": SECRET}
    case.headers = {k: v for k, v in (case.headers or {}).items() if k != "X-Hub-Signature"}


def fuzz(path: str, method: str, url: str, mode: schemathesis.GenerationMode) -> None:
    """Send bounded, derandomized generated requests, and check every answer."""

    @hypothesis.settings(
        max_examples=25,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=SCHEMA[path][method].as_strategy(mode))
    def run(case: schemathesis.Case) -> None:
        if path == WEBHOOK:
            sign(case)
        # A well-formed cursor may be one this log never gave (400) or pruned (410).
        # A subscription's URL must also name an allowed host, which no schema can say.
        picky = path in (CHANGES, SUBSCRIPTIONS)
        checks = [c for c in CHECKS if not picky or c is not positive_data_acceptance]
        case.validate_response(case.call(base_url=url), checks=checks)

    run()


@pytest.mark.parametrize(("path", "method", "mode"), RUNS)
async def test_fuzzed_requests_conform(db, settings, sim, path, method, mode) -> None:
    """Generated requests answer no 5xx and only documented answers that fit their schemas."""
    sim.seed(20, ["PRJ"])
    async with serve(jira_settings(settings, sim, **TOKENS)) as url:
        # Requests blocks: it runs in a thread while this loop serves the app and Jira.
        await asyncio.to_thread(fuzz, path, method, url, mode)
