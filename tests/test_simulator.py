"""The Jira simulator, exercised over real HTTP the way the cache's client and webhook see it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import signal
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jira_simulator import ENGLISH_CATEGORIES, SimOptions, Simulator
from service.model import InvalidIssueError, normalize_issue
from tests.live import wait_until

NOT_FOUND = {
    "errorMessages": ["Issue does not exist or you do not have permission to see it."],
    "errors": {},
}
JIRA_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}$")


class Receiver:
    """A webhook endpoint that records each request and answers queued statuses (else 200)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes, dict[str, str]]] = []
        self.answers: list[int] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read(), dict(request.query)))
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, _ in self.calls]


@pytest.fixture
async def receiver():
    hook = Receiver()
    await hook.start()
    yield hook
    await hook.stop()


@pytest.fixture
async def client():
    async with aiohttp.ClientSession() as session:
        yield session


async def started(options: SimOptions | None = None, seed: int = 6) -> Simulator:
    sim = Simulator(options or SimOptions(webhook_backoff=0.01))
    sim.seed(seed, ["ALPHA", "BETA"])
    await sim.start()
    return sim


@pytest.fixture
async def sim():
    simulator = await started()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def hooked(receiver):
    simulator = await started(
        SimOptions(webhook_url=receiver.url, webhook_secret="s3cret", webhook_backoff=0.01)
    )
    yield simulator
    await simulator.stop()


async def get(client, url: str, **kwargs) -> tuple[int, Any]:
    async with client.get(url, **kwargs) as reply:
        return reply.status, _parsed(await reply.text())


async def post(client, url: str, body: Any, **kwargs) -> tuple[int, Any]:
    async with client.post(url, json=body, **kwargs) as reply:
        return reply.status, _parsed(await reply.text())


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def test_issue_is_cloud_shaped_and_normalizes(sim, client):
    """GET issue answers Jira's shape: ms time with site offset, localized category name."""
    status, body = await get(client, f"{sim.base_url}/rest/api/3/issue/ALPHA-1")
    assert status == 200
    assert body["id"] == "10001"
    assert body["self"].endswith("/rest/api/3/issue/10001")
    assert JIRA_TIME.match(body["fields"]["updated"])
    assert body["fields"]["updated"][-5:] in ("-0600", "-0500")
    category = body["fields"]["status"]["statusCategory"]
    assert category["name"] in ("Aufgaben", "In Arbeit", "Fertig")
    issue = normalize_issue(body)
    assert (issue.id, issue.key, issue.status and issue.status.category) == (
        10001,
        "ALPHA-1",
        category["key"],
    )


async def test_fields_param_returns_only_those_fields(sim, client):
    """The fields parameter limits fields; id, key and self are always there."""
    url = f"{sim.base_url}/rest/api/2/issue/10002?fields=status,updated"
    status, body = await get(client, url)
    assert status == 200
    assert set(body["fields"]) == {"status", "updated"}
    assert {"id", "key", "self"} <= set(body)


async def test_missing_and_forbidden_issues_answer_jira_404(sim, client):
    """Unknown and forbidden issues both answer 404 with Jira's exact body."""
    sim.forbid("ALPHA-2")
    for ref in ("ALPHA-99", "ALPHA-2"):
        assert await get(client, f"{sim.base_url}/rest/api/3/issue/{ref}") == (404, NOT_FOUND)


async def test_bulkfetch_orders_by_id_and_leaves_out_unknown(sim, client):
    """Bulkfetch returns visible issues in ascending id order and silently drops the rest."""
    sim.forbid("BETA-2")
    refs = ["BETA-1", "alpha-1", "NOPE-9", "10003", "BETA-2", "BETA-1"]
    body = {"issueIdsOrKeys": refs, "fields": ["status", "updated"]}
    status, reply = await post(client, f"{sim.base_url}/rest/api/3/issue/bulkfetch", body)
    assert status == 200
    assert [issue["key"] for issue in reply["issues"]] == ["ALPHA-1", "BETA-1", "ALPHA-2"]
    assert reply["issueErrors"] == []
    assert all(set(issue["fields"]) == {"status", "updated"} for issue in reply["issues"])


@pytest.mark.parametrize("count", [0, 101])
async def test_bulkfetch_refuses_empty_or_over_100(sim, client, count):
    """Bulkfetch takes 1 to 100 ids or keys; anything else is a 400 in Jira's error shape."""
    body = {"issueIdsOrKeys": [f"ALPHA-{n + 1}" for n in range(count)]}
    status, reply = await post(client, f"{sim.base_url}/rest/api/3/issue/bulkfetch", body)
    assert status == 400
    assert reply["errors"] == {}
    assert reply["errorMessages"]


async def test_moved_issue_answers_old_key_under_new_key(sim, client):
    """After a move, the old key still answers, in GET and bulkfetch, under the new key."""
    new_key = sim.move("ALPHA-1", "GAMMA")
    assert new_key == "GAMMA-1"
    status, body = await get(client, f"{sim.base_url}/rest/api/3/issue/ALPHA-1")
    assert (status, body["key"], body["id"]) == (200, "GAMMA-1", "10001")
    body = {"issueIdsOrKeys": ["ALPHA-1"]}
    _, reply = await post(client, f"{sim.base_url}/rest/api/3/issue/bulkfetch", body)
    assert [issue["key"] for issue in reply["issues"]] == ["GAMMA-1"]


@pytest.mark.parametrize("version", ["2", "3"])
async def test_old_search_is_gone_on_cloud(sim, client, version):
    """Cloud's old /search answers 410 with the migration message, by GET and POST."""
    url = f"{sim.base_url}/rest/api/{version}/search"
    status, body = await get(client, url, params={"jql": "project = ALPHA"})
    assert status == 410
    assert "search/jql" in body["errorMessages"][0]
    assert (await post(client, url, {"jql": "project = ALPHA"}))[0] == 410


async def test_jql_pages_with_next_page_token(sim, client):
    """search/jql pages by nextPageToken, returns only ids by default, and omits it at the end."""
    url = f"{sim.base_url}/rest/api/3/search/jql"
    pages, token = [], None
    while True:
        params = {"jql": "project in (ALPHA, BETA)", "maxResults": "4"}
        status, body = await get(
            client, url, params={**params, **({"nextPageToken": token} if token else {})}
        )
        assert status == 200
        pages.append([issue["id"] for issue in body["issues"]])
        token = body.get("nextPageToken")
        assert body["isLast"] is (token is None)
        if token is None:
            break
    assert pages == [["10001", "10002", "10003", "10004"], ["10005", "10006"]]


async def test_jql_key_in_with_order_and_fields(sim, client):
    """POST search/jql finds keys (old keys too), sorts by ORDER BY and renders asked fields."""
    sim.move("BETA-1", "GAMMA")
    body = {"jql": "key in (ALPHA-1, BETA-1, ALPHA-2) ORDER BY key DESC", "fields": ["status"]}
    status, reply = await post(client, f"{sim.base_url}/rest/api/3/search/jql", body)
    assert status == 200
    assert [issue["key"] for issue in reply["issues"]] == ["GAMMA-1", "ALPHA-2", "ALPHA-1"]
    assert set(reply["issues"][0]["fields"]) == {"status"}


async def test_jql_unbounded_and_unknown_key_are_400(sim, client):
    """search/jql refuses an unbounded query and names an unknown key in Jira's words."""
    url = f"{sim.base_url}/rest/api/3/search/jql"
    status, body = await post(client, url, {"jql": "ORDER BY key"})
    assert status == 400
    assert "Unbounded" in body["errorMessages"][0]
    status, body = await post(client, url, {"jql": "key in (ALPHA-1, ALPHA-77)"})
    assert (status, body["errorMessages"]) == (
        400,
        ["An issue with key 'ALPHA-77' does not exist for field 'key'."],
    )


async def test_jql_updated_since_finds_recent_changes(sim, client):
    """`updated >= -5m` finds just the issues changed in the last five minutes."""
    sim.edit_summary("BETA-2", "Fresh")
    body = {"jql": "project in (ALPHA, BETA) AND updated >= -5m", "fields": ["summary"]}
    status, reply = await post(client, f"{sim.base_url}/rest/api/3/search/jql", body)
    assert status == 200
    assert [issue["key"] for issue in reply["issues"]] == ["BETA-2"]


async def test_data_center_search_and_issue_shape(client):
    """DC: /rest/api/2/search pages by startAt with total; people have name and key."""
    sim = await started(SimOptions(flavor="dc"))
    try:
        sim.assign("ALPHA-1", "ghopper")
        url = f"{sim.base_url}/rest/api/2/search"
        status, body = await get(
            client, url, params={"jql": "project = ALPHA", "startAt": "1", "maxResults": "1"}
        )
        assert (status, body["startAt"], body["maxResults"], body["total"]) == (200, 1, 1, 3)
        assert [issue["key"] for issue in body["issues"]] == ["ALPHA-2"]
        _, issue = await get(client, f"{sim.base_url}/rest/api/2/issue/ALPHA-1")
        assert issue["fields"]["assignee"]["key"] == "JIRAUSER10101"
        assert "accountId" not in issue["fields"]["assignee"]
        assert normalize_issue(issue).assignee.account_id == "JIRAUSER10101"
        assert (await get(client, f"{sim.base_url}/rest/api/3/issue/ALPHA-1"))[0] == 404
    finally:
        await sim.stop()


async def test_data_center_search_fails_whole_query_on_unknown_key(client):
    """DC: one unknown key in `key in (...)` fails the whole search with 400 naming it."""
    sim = await started(SimOptions(flavor="dc"))
    try:
        body = {"jql": "key in (ALPHA-1, ZZZ-9)", "maxResults": 10}
        status, reply = await post(client, f"{sim.base_url}/rest/api/2/search", body)
        assert status == 400
        assert reply == {
            "errorMessages": ["An issue with key 'ZZZ-9' does not exist for field 'key'."],
            "errors": {},
        }
    finally:
        await sim.stop()


async def test_credentials_basic_bearer_bad_and_anonymous(client):
    """Right Basic or Bearer passes, a wrong one is 401, and no credentials means anonymous."""
    sim = await started(SimOptions(email="me@example.com", token="tok", pat="pat-1"))
    try:
        issue = f"{sim.base_url}/rest/api/3/issue/ALPHA-1"
        basic = "Basic " + base64.b64encode(b"me@example.com:tok").decode()
        assert (await get(client, issue, headers={"Authorization": basic}))[0] == 200
        assert (await get(client, issue, headers={"Authorization": "Bearer pat-1"}))[0] == 200
        async with client.get(issue, headers={"Authorization": "Bearer nope"}) as reply:
            assert reply.status == 401
            assert await reply.text() == "Client must be authenticated to access this resource."
        assert await get(client, issue) == (404, NOT_FOUND)
        assert (await get(client, f"{sim.base_url}/rest/api/3/myself"))[0] == 401
    finally:
        await sim.stop()


async def test_rate_limit_answers_429_with_jira_headers(client):
    """An empty bucket answers 429 with Retry-After and the X-RateLimit-* headers."""
    sim = await started(SimOptions(rate_limit=1, burst=2, retry_after=0.2))
    try:
        url = f"{sim.base_url}/rest/api/3/issue/ALPHA-1"
        statuses = [(await get(client, url))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]
        async with client.get(url) as reply:
            assert reply.status == 429
            headers = reply.headers
        assert headers["Retry-After"] == "0.2"
        assert headers["RateLimit-Reason"] == "jira-burst-based"
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("2", "0")
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\dZ$", headers["X-RateLimit-Reset"])
        assert len(sim.early_requests()) == 1
    finally:
        await sim.stop()


async def test_polite_client_leaves_no_early_requests(client):
    """A client that waits out Retry-After gets through and leaves no early request."""
    sim = await started(SimOptions(rate_limit=5, burst=1, retry_after=0.15))
    try:
        url = f"{sim.base_url}/rest/api/3/issue/ALPHA-1"
        for _ in range(3):
            async with client.get(url) as reply:
                if reply.status == 429:
                    await asyncio.sleep(float(reply.headers["Retry-After"]))
        assert [entry.limited for entry in sim.requests].count(True) >= 1
        assert sim.early_requests() == []
    finally:
        await sim.stop()


async def test_omit_retry_after_mode_and_storm(sim, client):
    """A 429 storm refuses everything; the omit mode leaves Retry-After out."""
    sim.options.omit_retry_after = True
    sim.storm(0.3)
    async with client.get(f"{sim.base_url}/rest/api/3/issue/ALPHA-1") as reply:
        assert reply.status == 429
        assert "Retry-After" not in reply.headers
        assert reply.headers["RateLimit-Reason"] == "jira-burst-based"

    async def served() -> bool:  # the storm ends by itself, after its 0.3 s
        return (await get(client, f"{sim.base_url}/rest/api/3/issue/ALPHA-1"))[0] == 200

    await wait_until(served, 30)


async def test_fail_next_on_one_endpoint_with_retry_after(sim, client):
    """fail_next answers the next N requests to an endpoint with the status and Retry-After."""
    sim.fail_next(2, status=503, retry_after=1, endpoint="bulkfetch")
    bulk = f"{sim.base_url}/rest/api/3/issue/bulkfetch"
    assert (await get(client, f"{sim.base_url}/rest/api/3/issue/ALPHA-1"))[0] == 200
    for _ in range(2):
        async with client.post(bulk, json={"issueIdsOrKeys": ["ALPHA-1"]}) as reply:
            assert (reply.status, reply.headers["Retry-After"]) == (503, "1")
    assert (await post(client, bulk, {"issueIdsOrKeys": ["ALPHA-1"]}))[0] == 200


async def test_hang_next_times_out_a_client_then_recovers(sim, client):
    """hang_next stalls one request past the client's timeout; the next one is served."""
    sim.hang_next(1, 0.5)
    url = f"{sim.base_url}/rest/api/3/issue/ALPHA-1"
    with pytest.raises(asyncio.TimeoutError):
        await get(client, url, timeout=aiohttp.ClientTimeout(total=0.1))
    assert (await get(client, url))[0] == 200

    async def both_logged() -> bool:  # the hung request is logged when its handler ends
        return sorted(entry.status for entry in sim.requests) == [200, 499]

    await wait_until(both_logged, 30)


async def test_counters_over_python_and_http(sim, client):
    """Counters count requests by endpoint, /_sim/stats shows them, and reset clears them."""
    await get(client, f"{sim.base_url}/rest/api/3/issue/ALPHA-1")
    await post(
        client, f"{sim.base_url}/rest/api/3/issue/bulkfetch", {"issueIdsOrKeys": ["ALPHA-1"]}
    )
    await post(client, f"{sim.base_url}/rest/api/3/search/jql", {"jql": "project = ALPHA"})
    assert sim.counters == {"issue": 1, "bulkfetch": 1, "search_jql": 1}
    status, stats = await get(client, f"{sim.base_url}/_sim/stats")
    assert status == 200
    assert stats["counters"] == {"issue": 1, "bulkfetch": 1, "search_jql": 1}
    assert [entry["endpoint"] for entry in stats["requests"]] == [
        "issue",
        "bulkfetch",
        "search_jql",
    ]
    await post(client, f"{sim.base_url}/_sim/reset", {})
    assert sim.counters == {}


async def test_sim_http_endpoints_drive_the_site(sim, client):
    """/_sim endpoints create, transition, fault and reconfigure, for out-of-process drivers."""
    base = f"{sim.base_url}/_sim"
    status, created = await post(client, f"{base}/issues", {"project": "BETA", "summary": "New"})
    assert (status, created["key"]) == (201, "BETA-4")
    _, moved = await post(client, f"{base}/issues/BETA-4/transition", {"status": "Done"})
    assert moved == {"status": "Done"}
    assert (await post(client, f"{base}/issues/NOPE-1/transition", {}))[0] == 404
    await post(client, f"{base}/faults/fail", {"count": 1, "status": 500})
    assert (await get(client, f"{sim.base_url}/rest/api/3/issue/BETA-4"))[0] == 500
    async with client.patch(f"{base}/options", json={"latency": 0.01}) as reply:
        assert (await reply.json())["latency"] == 0.01
    async with client.patch(f"{base}/options", json={"flavor": "dc"}) as reply:
        assert reply.status == 400


async def test_sim_http_webhook_switches_and_drain(hooked, receiver, client):
    """/_sim/webhooks sets delivery switches and its drain reports every attempt."""
    async with client.patch(f"{hooked.base_url}/_sim/webhooks", json={"drop_next": 1}) as reply:
        assert (await reply.json())["switches"]["drop_next"] == 1
    await post(client, f"{hooked.base_url}/_sim/issues/ALPHA-1/transition", {})
    await post(client, f"{hooked.base_url}/_sim/issues/ALPHA-1/comment", {"body": "Hi"})
    status, state = await post(client, f"{hooked.base_url}/_sim/webhooks/drain", {})
    assert status == 200
    assert len(state["dropped"]) == 1
    assert [attempt["status"] for attempt in state["attempts"]] == [200, 200]


def signature_of(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Hub-Signature"], expected)


async def test_transition_webhook_is_signed_and_normalizes(hooked, receiver):
    """A transition sends jira:issue_updated with a status changelog, signed over the raw body."""
    before = hooked.site.get("ALPHA-1").status
    hooked.transition("ALPHA-1")
    await hooked.drain_webhooks()
    [(headers, body, _)] = receiver.calls
    assert signature_of(headers, body)
    assert headers["Content-Type"] == "application/json"
    assert "X-Atlassian-Webhook-Retry" not in headers
    payload = json.loads(body)
    assert (payload["webhookEvent"], payload["issue_event_type_name"]) == (
        "jira:issue_updated",
        "issue_generic",
    )
    change = payload["changelog"]["items"][0]
    assert (change["field"], change["from"], change["fromString"]) == (
        "status",
        before.id,
        before.name,
    )
    issue = normalize_issue(payload["issue"])
    assert issue.status is not None and issue.status.category != before.category
    assert abs(issue.updated.timestamp() * 1000 - payload["timestamp"]) < 1


async def test_webhook_retries_503_with_same_identifier(hooked, receiver):
    """A 503 is retried with the same identifier and X-Atlassian-Webhook-Retry: 1."""
    receiver.answers = [503, 200]
    hooked.edit_summary("ALPHA-1", "Renamed")
    await hooked.drain_webhooks()
    first, second = (headers for headers, _, _ in receiver.calls)
    assert first["X-Atlassian-Webhook-Identifier"] == second["X-Atlassian-Webhook-Identifier"]
    assert second["X-Atlassian-Webhook-Retry"] == "1"
    assert [(a.retry, a.status) for a in hooked.attempts] == [(0, 503), (1, 200)]


async def test_webhook_is_not_retried_on_400(hooked, receiver):
    """A 4xx other than 408, 409, 425 and 429 is never retried."""
    receiver.answers = [400]
    hooked.assign("ALPHA-1", "Ada Lovelace")
    await hooked.drain_webhooks()
    assert len(receiver.calls) == 1
    assert [a.status for a in hooked.attempts] == [400]


async def test_webhook_retries_connection_errors_up_to_max_tries():
    """A dead receiver is tried webhook_max_tries times, each attempt recording the error."""
    sim = await started(
        SimOptions(webhook_url="http://127.0.0.1:9/hook", webhook_max_tries=3, webhook_backoff=0.01)
    )
    try:
        sim.transition("ALPHA-1")
        await sim.drain_webhooks()
        assert [(a.retry, a.status) for a in sim.attempts] == [(0, None), (1, None), (2, None)]
        assert all(a.error for a in sim.attempts)
    finally:
        await sim.stop()


async def test_webhook_drop_and_duplicate(hooked, receiver):
    """drop_next loses a delivery; duplicate_next sends one twice with the same identifier."""
    hooked.webhooks.drop_next = 1
    hooked.webhooks.duplicate_next = 1
    hooked.transition("ALPHA-1")
    hooked.transition("ALPHA-2")
    await hooked.drain_webhooks()
    keys = [payload["issue"]["key"] for payload in receiver.payloads()]
    assert keys == ["ALPHA-2", "ALPHA-2"]
    identifiers = {headers["X-Atlassian-Webhook-Identifier"] for headers, _, _ in receiver.calls}
    assert len(identifiers) == 1
    assert [delivery.key for delivery in hooked.hooks.dropped] == ["ALPHA-1"]


async def test_webhook_reorder_delivers_newest_first(hooked, receiver):
    """With reorder on, held webhooks are delivered newest first when drained."""
    hooked.webhooks.reorder = True
    hooked.transition("ALPHA-1")
    hooked.edit_summary("ALPHA-1", "Later")
    assert [delivery.key for delivery in hooked.hooks.held] == ["ALPHA-1", "ALPHA-1"]
    assert receiver.calls == []
    await hooked.drain_webhooks()
    stamps = [payload["timestamp"] for payload in receiver.payloads()]
    assert len(stamps) == 2
    assert stamps[0] > stamps[1]


async def test_move_delete_and_assign_webhooks(hooked, receiver):
    """Move, assign and delete send Jira's event types and changelog items."""
    hooked.move("ALPHA-1", "GAMMA")
    hooked.assign("GAMMA-1", "Grace Hopper")
    hooked.unassign("GAMMA-1")
    hooked.delete("GAMMA-1")
    await hooked.drain_webhooks()
    by_type = {p["issue_event_type_name"]: p for p in receiver.payloads()}
    moved = by_type["issue_moved"]
    key_item = next(i for i in moved["changelog"]["items"] if i["field"] == "Key")
    assert (key_item["fromString"], key_item["toString"]) == ("ALPHA-1", "GAMMA-1")
    assert moved["issue"]["key"] == "GAMMA-1"
    assigned = [p for p in receiver.payloads() if p["issue_event_type_name"] == "issue_assigned"]
    tos = [p["changelog"]["items"][0]["tmpToAccountId"] for p in assigned]
    assert tos[0].startswith("712020:") and tos[1] is None
    deleted = by_type["issue_deleted"]
    assert deleted["webhookEvent"] == "jira:issue_deleted"
    assert normalize_issue(deleted["issue"]).key == "GAMMA-1"
    assert hooked.site.find("GAMMA-1") is None


async def test_comment_sends_issue_commented_and_a_partial_comment_created(hooked, receiver):
    """A comment sends issue_commented (full issue) and comment_created without `updated`."""
    hooked.comment("ALPHA-1", "Hello")
    await hooked.drain_webhooks()
    created, commented = sorted(receiver.payloads(), key=lambda p: p["webhookEvent"])
    assert commented["issue_event_type_name"] == "issue_commented"
    assert normalize_issue(commented["issue"]).key == "ALPHA-1"
    assert created["webhookEvent"] == "comment_created"
    assert created["comment"]["body"] == "Hello"
    assert "updated" not in created["issue"]["fields"]
    with pytest.raises(InvalidIssueError):
        normalize_issue(created["issue"])


async def test_created_issue_webhook_normalizes_in_english(receiver):
    """Created issues send jira:issue_created; English category names are an option."""
    options = SimOptions(webhook_url=receiver.url, category_names=dict(ENGLISH_CATEGORIES))
    sim = await started(options)
    try:
        key = sim.create_issue("BETA", "Brand new", assignee="Alan Turing")
        await sim.drain_webhooks()
        [payload] = receiver.payloads()
        assert (payload["webhookEvent"], payload["issue"]["key"]) == ("jira:issue_created", key)
        assert payload["issue"]["fields"]["status"]["statusCategory"]["name"] == "To Do"
        assert normalize_issue(payload["issue"]).assignee.display_name == "Alan Turing"
        assert "X-Hub-Signature" not in receiver.calls[0][0]
    finally:
        await sim.stop()


async def test_query_secret_mode_puts_secret_in_url(receiver):
    """Data Center style: the secret rides in ?secret= and the body is not signed."""
    options = SimOptions(
        flavor="dc", webhook_url=receiver.url, webhook_secret="s3cret", webhook_secret_in_query=True
    )
    sim = await started(options)
    try:
        sim.transition("ALPHA-1")
        await sim.drain_webhooks()
        [(headers, _, query)] = receiver.calls
        assert query == {"secret": "s3cret"}
        assert "X-Hub-Signature" not in headers
        assert receiver.payloads()[0]["changelog"]["items"][0]["field"] == "status"
    finally:
        await sim.stop()


async def test_cli_serves_until_sigterm_and_exits_zero(client):
    """`python -m service.simulator` serves seeded issues and exits 0 on SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jira_simulator",
        "--port",
        "0",
        "--issues",
        "3",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
    base = re.search(r"http://\S+", line)
    assert base is not None
    assert (await get(client, f"{base[0]}/rest/api/3/issue/GAMMA-1"))[0] == 200
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
