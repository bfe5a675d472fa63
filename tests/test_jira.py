"""The Jira client against aioresponses: answers, errors, retries, chunking and the breaker."""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import re
import time
from dataclasses import replace
from email.utils import formatdate
from types import SimpleNamespace

import pytest
from aiohttp import ClientResponse
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from service.config import ConfigError, JiraSettings, Settings
from service.jira.client import (
    FIELDS,
    CircuitOpenError,
    JiraAuthError,
    JiraClient,
    JiraError,
    JiraRateLimitedError,
    JiraUnavailableError,
    open_session,
)
from service.jira.pacing import CircuitBreaker, RateLimiter
from service.storage import issues as store
from service.sync.refresh import KeyResult
from service.sync.wiring import jira_parts
from tests.factory import make_issue
from tests.test_ratelimit import FakeTime

TOKEN = "api-token-SECRET-4f9a"
PAT = "pat-SECRET-77c1"
BASE = "https://jira.test"
CLOUD = JiraSettings(base_url=BASE, email="bot@example.com", api_token=TOKEN)
DC = replace(CLOUD, flavor="dc", pat=PAT)
BULK = f"{BASE}/rest/api/3/issue/bulkfetch"
SEARCH = f"{BASE}/rest/api/2/search"
SEARCH_JQL = f"{BASE}/rest/api/3/search/jql"
MYSELF = f"{BASE}/rest/api/3/myself"
NOT_FOUND = {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}
ISSUE_ROUTE = "GET /rest/api/3/issue/{key}"


class _Response(ClientResponse):
    """aioresponses 0.7.9 does not pass aiohttp 3.14's new `stream_writer` (aioresponses#289)."""

    def __init__(self, method, url, **kwargs):
        # With no writer task, aiohttp only reads the writer's output_size.
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def raw_issue(key: str, id: int | None = None, **fields: object) -> dict[str, object]:
    number = int(key.split("-")[1])
    body: dict[str, object] = {
        "status": {"id": "3", "name": "In Progress", "statusCategory": {"key": "indeterminate"}},
        "summary": f"Issue {key}",
        "assignee": None,
        "priority": {"name": "High"},
        "updated": "2026-11-26T05:37:14.123-0600",
    }
    return {"id": str(id or 10000 + number), "key": key, "fields": body | fields}


def issue_url(key: str, api: int = 3) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(BASE)}/rest/api/{api}/issue/{re.escape(key)}\?fields=")


def bulk_answer(*issues: dict[str, object]):
    """A bulkfetch that answers the requested keys it knows, as Cloud does."""
    known = {str(issue["key"]): issue for issue in issues}

    def callback(url, **kwargs):
        wanted = kwargs["json"]["issueIdsOrKeys"]
        return CallbackResult(payload={"issues": [known[k] for k in wanted if k in known]})

    return callback


def sent(mocked: aioresponses, method: str, url: str) -> list[dict]:
    return [call.kwargs for call in mocked.requests.get((method, URL(url)), [])]


def count(mocked: aioresponses) -> int:
    return sum(len(calls) for calls in mocked.requests.values())


@pytest.fixture
def fake():
    return FakeTime()


@pytest.fixture
def mocked(monkeypatch):
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        monkeypatch.setattr("aioresponses.core.ClientResponse", _Response)
    with aioresponses() as mock:
        yield mock


@pytest.fixture
async def make_client(fake):
    """Build clients on the fake clock, with backoff 1, 2, 4, 8 s and no jitter."""
    sessions = []

    def make(settings: JiraSettings = CLOUD, threshold: int = 5, **changes) -> JiraClient:
        settings = replace(settings, **changes)
        sessions.append(session := open_session(settings))
        limiter = RateLimiter(
            max_rps=settings.max_rps,
            base=1.0,
            cap=8.0,
            clock=fake.clock,
            sleep=fake.sleep,
            rand=lambda: 1.0,
        )
        breaker = CircuitBreaker(threshold=threshold, cool_off=30.0, clock=fake.clock)
        return JiraClient(session, settings, limiter=limiter, breaker=breaker)

    yield make
    for session in sessions:
        await session.close()


async def test_read_issue_reads_one_issue_with_few_fields(mocked, make_client):
    """A 200 is normalized, and only the five cached fields are asked for, with our auth."""
    mocked.get(issue_url("PRJ-1"), payload=raw_issue("PRJ-1"))
    issue = await make_client().read_issue("prj-1")
    assert issue is not None
    assert (issue.id, issue.key, issue.priority) == (10001, "PRJ-1", "High")
    [call] = next(iter(mocked.requests.values()))
    assert call.kwargs["params"] == {"fields": "status,summary,assignee,priority,updated"}
    basic = base64.b64encode(f"bot@example.com:{TOKEN}".encode()).decode()
    assert call.kwargs["headers"]["Authorization"] == f"Basic {basic}"
    assert call.kwargs["headers"]["Accept"] == "application/json"


async def test_read_issue_is_none_for_404(mocked, make_client):
    """Jira's 404 means no issue we may see."""
    mocked.get(issue_url("PRJ-1"), status=404, payload=NOT_FOUND)
    assert await make_client().read_issue("PRJ-1") is None


async def test_401_is_an_auth_error_and_not_retried(mocked, make_client):
    """Bad credentials fail at once, naming the endpoint but no URL."""
    mocked.get(MYSELF, status=401, payload={"errorMessages": ["Unauthorized"]})
    with pytest.raises(JiraAuthError) as caught:
        await make_client().check_credentials()
    assert (caught.value.status, caught.value.endpoint) == (401, "GET /rest/api/3/myself")
    assert count(mocked) == 1


async def test_403_is_an_auth_error_with_the_denial_reason(mocked, make_client):
    """A 403 is an auth error, and Data Center's CAPTCHA reason is kept."""
    denied = {"X-Authentication-Denied-Reason": "CAPTCHA_CHALLENGE; login-url=https://x/login"}
    mocked.get(MYSELF, status=403, headers=denied, body="")
    with pytest.raises(JiraAuthError) as caught:
        await make_client().check_credentials()
    assert (caught.value.status, caught.value.reason) == (403, "CAPTCHA_CHALLENGE")


@pytest.mark.parametrize(
    ("status", "reason"), [(200, "AUTHENTICATED_FAILED"), (404, "AUTHENTICATION_DENIED")]
)
async def test_seraph_login_failure_is_an_auth_error_whatever_the_status(
    mocked, make_client, status, reason
):
    """Jira may answer bad credentials as an anonymous user; the header gives it away."""
    headers = {"X-Seraph-LoginReason": reason}
    mocked.post(BULK, status=status, headers=headers, payload={"issues": []})
    with pytest.raises(JiraAuthError) as caught:
        await make_client().read_issues(["PRJ-1", "PRJ-2"])
    assert caught.value.reason == reason


async def test_check_credentials_returns_the_user(mocked, make_client):
    """/myself answers who we are."""
    mocked.get(MYSELF, payload={"accountId": "5b10", "displayName": "Bot"})
    assert (await make_client().check_credentials())["accountId"] == "5b10"


async def test_429_retry_after_seconds_is_waited_then_retried(mocked, make_client, fake):
    """A 429 with Retry-After: 7 pauses 7 s before the retry, which succeeds."""
    mocked.get(issue_url("PRJ-1"), status=429, headers={"Retry-After": "7"})
    mocked.get(issue_url("PRJ-1"), payload=raw_issue("PRJ-1"))
    client = make_client()
    assert await client.read_issue("PRJ-1") is not None
    assert fake.sleeps == [7.0]
    assert (client.stats.rate_limited, client.stats.rate_limit_wait) == (1, 7.0)
    assert client.stats.requests[ISSUE_ROUTE, "429"] == 1


async def test_429_pause_holds_every_other_request(mocked, make_client, fake):
    """Retry-After gates the next request of the process, even when the first gives up."""
    mocked.get(issue_url("PRJ-1"), status=429, headers={"Retry-After": "7"})
    mocked.get(issue_url("PRJ-2"), payload=raw_issue("PRJ-2"))
    client = make_client(max_retries=0)
    with pytest.raises(JiraRateLimitedError) as caught:
        await client.read_issue("PRJ-1")
    assert caught.value.retry_after == 7.0
    assert fake.sleeps == []
    assert await client.read_issue("PRJ-2") is not None
    assert fake.sleeps == [7.0]


async def test_429_retry_after_as_http_date(mocked, make_client, fake):
    """Retry-After given as an HTTP date pauses until that date."""
    later = formatdate(time.time() + 20, usegmt=True)
    mocked.get(issue_url("PRJ-1"), status=429, headers={"Retry-After": later})
    mocked.get(issue_url("PRJ-1"), payload=raw_issue("PRJ-1"))
    await make_client().read_issue("PRJ-1")
    [pause] = fake.sleeps
    assert 18.0 < pause <= 20.0


async def test_429_without_retry_after_backs_off_then_gives_up(mocked, make_client, fake):
    """Without Retry-After the pauses double (1, 2, 4 s) and the last 429 is raised."""
    mocked.get(issue_url("PRJ-1"), status=429, repeat=True)
    client = make_client(max_retries=3)
    with pytest.raises(JiraRateLimitedError) as caught:
        await client.read_issue("PRJ-1")
    assert fake.sleeps == [1.0, 2.0, 4.0]
    assert (caught.value.retry_after, caught.value.status) == (8.0, 429)
    assert client.stats.rate_limited == 4


async def test_503_with_retry_after_is_honoured(mocked, make_client, fake):
    """A 503 with Retry-After pauses like a 429 and is retried."""
    mocked.get(issue_url("PRJ-1"), status=503, headers={"Retry-After": "3"}, body="")
    mocked.get(issue_url("PRJ-1"), payload=raw_issue("PRJ-1"))
    assert await make_client().read_issue("PRJ-1") is not None
    assert fake.sleeps == [3.0]


async def test_5xx_exhausted_is_unavailable(mocked, make_client, fake):
    """Server errors are retried with backoff, then raised as unavailable."""
    mocked.get(issue_url("PRJ-1"), status=502, body="Bad Gateway", repeat=True)
    with pytest.raises(JiraUnavailableError) as caught:
        await make_client(max_retries=1).read_issue("PRJ-1")
    assert caught.value.status == 502
    assert fake.sleeps == [1.0]


async def test_timeout_is_retried_then_unavailable(mocked, make_client):
    """Timeouts are retried and then raised as unavailable with no status."""
    mocked.get(issue_url("PRJ-1"), exception=TimeoutError(), repeat=True)
    client = make_client(max_retries=1)
    with pytest.raises(JiraUnavailableError, match="timed out") as caught:
        await client.read_issue("PRJ-1")
    assert caught.value.status is None
    assert client.stats.requests[ISSUE_ROUTE, "timeout"] == 2


async def test_timeout_then_success(mocked, make_client):
    """One timeout does not fail a read that succeeds on retry."""
    mocked.get(issue_url("PRJ-1"), exception=TimeoutError())
    mocked.get(issue_url("PRJ-1"), payload=raw_issue("PRJ-1"))
    assert await make_client().read_issue("PRJ-1") is not None


@pytest.mark.parametrize("status", [200, 404])
async def test_body_that_is_not_json_is_unavailable(mocked, make_client, status):
    """HTML from a proxy or a wrong base URL is neither an issue nor "not found"."""
    page = "<html>Log in</html>"
    mocked.get(issue_url("PRJ-1"), status=status, body=page, content_type="text/html")
    with pytest.raises(JiraUnavailableError, match="not JSON"):
        await make_client().read_issue("PRJ-1")


@pytest.mark.parametrize(
    ("keys", "batch", "sizes"), [(250, 100, [50, 100, 100]), (100, 40, [20, 40, 40])]
)
async def test_bulkfetch_in_chunks_of_the_batch_size(mocked, make_client, keys, batch, sizes):
    """Keys go to bulkfetch in chunks no larger than the batch size, fields named."""
    issues = [raw_issue(f"PRJ-{n}") for n in range(1, keys + 1)]
    mocked.post(BULK, callback=bulk_answer(*issues), repeat=True)
    reading = await make_client(batch_size=batch).read_issues([i["key"] for i in issues])
    calls = sent(mocked, "POST", BULK)
    assert sorted(len(call["json"]["issueIdsOrKeys"]) for call in calls) == sizes
    assert all(call["json"]["fields"] == list(FIELDS) for call in calls)
    assert len(reading.issues) == keys
    assert reading.not_found == []


async def test_never_more_requests_in_flight_than_the_cap(mocked, make_client):
    """Concurrent chunks share one semaphore of JIRA_MAX_CONCURRENCY."""
    in_flight, peak = 0, 0
    issues = [raw_issue(f"PRJ-{n}") for n in range(1, 101)]
    answer = bulk_answer(*issues)

    async def slow(url, **kwargs):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return answer(url, **kwargs)

    mocked.post(BULK, callback=slow, repeat=True)
    client = make_client(batch_size=10, max_concurrency=3)
    reading = await client.read_issues([str(i["key"]) for i in issues])
    assert peak == 3
    assert len(reading.issues) == 100


async def test_moved_key_is_recorded_against_the_issue_id(mocked, make_client):
    """An old key answered under a new key is confirmed and mapped to the issue's id."""
    moved = raw_issue("NEW-5", id=10042)
    mocked.post(BULK, payload={"issues": [moved, raw_issue("PRJ-1")]})
    mocked.get(issue_url("OLD-1"), payload=moved)
    reading = await make_client().read_issues(["OLD-1", "PRJ-1"])
    assert reading.moved == {"OLD-1": 10042}
    assert sorted(issue.key for issue in reading.issues) == ["NEW-5", "PRJ-1"]
    assert reading.not_found == []


def search_answer(known: dict[str, dict[str, object]]):
    """A Cloud search/jql for `key in (...)`: 400 naming the unknown keys, else the issues."""

    def callback(url, **kwargs):
        asked = re.findall(r'"([^"]+)"', kwargs["json"]["jql"])
        unknown = [f"An issue with key '{key}' does not exist for field 'key'." for key in asked]
        unknown = [text for key, text in zip(asked, unknown, strict=True) if key not in known]
        if unknown:
            return CallbackResult(status=400, payload={"errorMessages": unknown, "errors": {}})
        return CallbackResult(payload={"issues": [known[key] for key in asked], "isLast": True})

    return callback


async def test_absent_keys_are_settled_by_one_search(mocked, make_client):
    """Keys bulkfetch leaves out are confirmed missing by one search, not a GET each."""
    mocked.post(BULK, callback=bulk_answer(raw_issue("PRJ-1")))
    mocked.post(SEARCH_JQL, callback=search_answer({}), repeat=True)
    reading = await make_client().read_issues(["PRJ-1", "PRJ-2", "PRJ-3"])
    assert sorted(reading.not_found) == ["PRJ-2", "PRJ-3"]
    [search] = sent(mocked, "POST", SEARCH_JQL)
    assert search["json"]["jql"] == 'key in ("PRJ-2", "PRJ-3")'
    assert count(mocked) == 2


async def test_moved_key_is_paired_by_the_search(mocked, make_client):
    """The one key left after dropping unknown ones, answered under a new key, has moved."""
    moved = raw_issue("NEW-5", id=10042)
    mocked.post(BULK, callback=bulk_answer(raw_issue("PRJ-1")))
    mocked.post(SEARCH_JQL, callback=search_answer({"OLD-1": moved}), repeat=True)
    reading = await make_client().read_issues(["OLD-1", "PRJ-1", "PRJ-2"])
    assert reading.moved == {"OLD-1": 10042} and reading.not_found == ["PRJ-2"]
    assert sorted(issue.key for issue in reading.issues) == ["NEW-5", "PRJ-1"]
    assert count(mocked) == 3  # bulkfetch, a search naming PRJ-2, a search without it


async def test_cloud_search_pages_with_its_token(mocked, make_client):
    """Keys a bulk answer dropped are searched page by page with Cloud's nextPageToken."""
    later = [raw_issue("PRJ-2"), raw_issue("PRJ-3"), raw_issue("PRJ-4")]
    mocked.post(BULK, callback=bulk_answer(raw_issue("PRJ-1")))
    mocked.post(SEARCH_JQL, payload={"issues": later[:1], "nextPageToken": "t1"})
    mocked.post(SEARCH_JQL, payload={"issues": later[1:], "isLast": True})
    reading = await make_client().read_issues(["PRJ-1", "PRJ-2", "PRJ-3", "PRJ-4"])
    assert sorted(issue.key for issue in reading.issues) == ["PRJ-1", "PRJ-2", "PRJ-3", "PRJ-4"]
    pages = [call["json"].get("nextPageToken") for call in sent(mocked, "POST", SEARCH_JQL)]
    assert pages == [None, "t1"] and reading.not_found == []


async def test_refused_connection_is_not_retried(make_client, fake):
    """Nothing listening at Jira's address fails at once, unavailable, with no retry or pause."""
    client = make_client(base_url="http://127.0.0.1:9", max_retries=4)
    with pytest.raises(JiraUnavailableError, match="could not be reached"):
        await client.check_credentials()
    assert client.stats.requests["GET /rest/api/3/myself", "connection_error"] == 1
    assert fake.sleeps == []


async def test_absent_key_confirmed_as_not_found(mocked, make_client):
    """A key bulkfetch leaves out is checked once, and a 404 lists it as not found."""
    mocked.post(BULK, callback=bulk_answer(raw_issue("PRJ-1")))
    mocked.get(issue_url("PRJ-2"), status=404, payload=NOT_FOUND)
    reading = await make_client().read_issues(["PRJ-1", "PRJ-2"])
    assert [issue.key for issue in reading.issues] == ["PRJ-1"]
    assert (reading.not_found, reading.moved) == (["PRJ-2"], {})


async def test_one_key_is_one_get_and_no_bulk_call(mocked, make_client):
    """A single key is read with one GET, which also answers a moved key."""
    mocked.get(re.compile(r".*/issue/OLD-1\?.*"), payload=raw_issue("NEW-1", id=10001))
    reading = await make_client().read_issues(["OLD-1"])
    assert [issue.key for issue in reading.issues] == ["NEW-1"]
    assert reading.moved == {"OLD-1": 10001}
    assert count(mocked) == 1


async def test_key_requested_by_id_is_found_by_id(mocked, make_client):
    """A numeric id found in the answer needs no confirming GET (none is mocked)."""
    answer = [raw_issue("PRJ-1", id=10001), raw_issue("PRJ-2", id=10002)]
    mocked.post(BULK, payload={"issues": answer})
    reading = await make_client(max_retries=0).read_issues(["10001", "10002"])
    assert [issue.id for issue in reading.issues] == [10001, 10002]
    assert count(mocked) == 1


async def test_one_bad_issue_does_not_fail_the_batch(mocked, make_client):
    """Unusable issue JSON and malformed keys are listed as invalid; the rest is read."""
    mocked.post(BULK, payload={"issues": [raw_issue("PRJ-1"), raw_issue("PRJ-2", updated=None)]})
    reading = await make_client().read_issues(["PRJ-1", "PRJ-2", "not a key"])
    assert [issue.key for issue in reading.issues] == ["PRJ-1"]
    invalid = dict(reading.invalid)
    assert "not a key" in invalid and invalid["PRJ-2"] == "issue has no fields.updated"
    assert count(mocked) == 1


async def test_unusable_issue_json_marks_the_cached_issue_error(mocked, db):
    """An issue Jira answers with unusable JSON keeps its cached data, marked state error."""
    await store.upsert_issues(db, [make_issue(id=10002, key="PRJ-2")], "poll")
    mocked.post(BULK, payload={"issues": [raw_issue("PRJ-1"), raw_issue("PRJ-2", updated=None)]})
    async with jira_parts(Settings(jira=CLOUD), db) as parts:
        assert parts.refresher is not None
        report = await parts.refresher.refresh(["PRJ-1", "PRJ-2"], "refresh")
    assert report.results["PRJ-2"] == KeyResult("failed", "issue has no fields.updated")
    cached = await store.select_by_key(db, "PRJ-2")
    assert cached is not None and cached.issue.summary == "Login fails"
    assert (cached.state, cached.error) == ("error", "unusable answer from Jira")


async def test_no_keys_no_requests(mocked, make_client):
    """Reading nothing asks Jira nothing."""
    reading = await make_client().read_issues([])
    assert (reading.issues, reading.not_found, count(mocked)) == ([], [], 0)


async def test_dc_search_drops_unknown_keys_and_retries(mocked, make_client):
    """On Data Center one unknown key fails the search; it is dropped and the rest re-asked."""
    unknown = "An issue with key 'PRJ-2' does not exist for field 'key'."
    mocked.post(SEARCH, status=400, payload={"errorMessages": [unknown], "errors": {}})
    found = [raw_issue("PRJ-1"), raw_issue("PRJ-3")]
    mocked.post(SEARCH, payload={"startAt": 0, "maxResults": 2, "total": 2, "issues": found})
    reading = await make_client(DC).read_issues(["PRJ-1", "PRJ-2", "PRJ-3"])
    first, second = sent(mocked, "POST", SEARCH)
    assert first["json"]["jql"] == 'key in ("PRJ-1", "PRJ-2", "PRJ-3")'
    assert second["json"]["jql"] == 'key in ("PRJ-1", "PRJ-3")'
    assert first["json"]["fields"] == list(FIELDS)
    assert first["headers"]["Authorization"] == f"Bearer {PAT}"
    assert sorted(issue.key for issue in reading.issues) == ["PRJ-1", "PRJ-3"]
    assert reading.not_found == ["PRJ-2"]
    assert count(mocked) == 2  # Jira named it unknown: no GET to confirm it


async def test_dc_search_pages_with_start_at(mocked, make_client):
    """When Jira caps maxResults, the search pages on with startAt until the total."""
    issues = [raw_issue(f"PRJ-{n}") for n in range(1, 6)]

    def page(url, **kwargs):
        start = kwargs["json"]["startAt"]
        return CallbackResult(payload={"total": 5, "issues": issues[start : start + 2]})

    mocked.post(SEARCH, callback=page, repeat=True)
    reading = await make_client(DC).read_issues([str(i["key"]) for i in issues])
    assert [call["json"]["startAt"] for call in sent(mocked, "POST", SEARCH)] == [0, 2, 4]
    assert len(reading.issues) == 5


async def test_other_4xx_is_a_plain_jira_error(mocked, make_client):
    """A 400 Jira does not explain with unknown keys is raised with its message."""
    bad = {"errorMessages": ["Field 'key' does not support searching."]}
    mocked.post(SEARCH, status=400, payload=bad)
    with pytest.raises(JiraError, match="does not support searching") as caught:
        await make_client(DC).read_issues(["PRJ-1", "PRJ-2"])
    assert type(caught.value) is JiraError
    assert caught.value.status == 400


async def test_breaker_opens_then_probes_after_cool_off(mocked, make_client, fake):
    """After 3 failed calls the 4th is refused unsent; after the cool-off one probe closes it."""
    mocked.get(MYSELF, status=500, body="", repeat=3)
    mocked.get(MYSELF, payload={"accountId": "5b10"})
    client = make_client(threshold=3, max_retries=0)
    for _ in range(3):
        with pytest.raises(JiraUnavailableError):
            await client.check_credentials()
    with pytest.raises(CircuitOpenError) as caught:
        await client.check_credentials()
    assert (caught.value.retry_after, count(mocked)) == (30.0, 3)
    assert client.health == "degraded"
    fake.now += 30.0
    assert await client.check_credentials() == {"accountId": "5b10"}
    assert client.health == "ok"


async def test_failed_probe_reopens_the_breaker(mocked, make_client, fake):
    """A probe that fails refuses further calls for another cool-off."""
    mocked.get(MYSELF, status=500, body="", repeat=2)
    client = make_client(threshold=1, max_retries=0)
    with pytest.raises(JiraUnavailableError):
        await client.check_credentials()
    fake.now += 30.0
    with pytest.raises(JiraUnavailableError) as probe:
        await client.check_credentials()
    assert not isinstance(probe.value, CircuitOpenError)
    with pytest.raises(CircuitOpenError):
        await client.check_credentials()
    assert count(mocked) == 2


async def test_pause_longer_than_max_wait_fails_fast(mocked, make_client, fake):
    """A Retry-After beyond the limiter's max_wait is raised, not slept through."""
    mocked.get(issue_url("PRJ-1"), status=429, headers={"Retry-After": "600"})
    with pytest.raises(JiraRateLimitedError) as caught:
        await make_client().read_issue("PRJ-1")
    assert caught.value.retry_after == 600.0
    assert (fake.sleeps, count(mocked)) == ([], 1)


async def test_tokens_never_in_errors_logs_or_reprs(mocked, make_client, caplog):
    """No credential shows in an error's str or repr, a log line, or the client's repr."""
    caplog.set_level(logging.DEBUG)
    mocked.get(MYSELF, status=401, payload={"errorMessages": ["Unauthorized"]})
    mocked.get(issue_url("PRJ-1"), exception=TimeoutError(), repeat=True)
    mocked.get(issue_url("PRJ-2", api=2), status=429, repeat=True)
    cloud, dc = make_client(max_retries=1), make_client(DC, max_retries=1)
    errors: list[BaseException] = []
    for call in (cloud.check_credentials(), cloud.read_issue("PRJ-1"), dc.read_issue("PRJ-2")):
        with pytest.raises(JiraError) as caught:
            await call
        errors.append(caught.value)
    basic = base64.b64encode(f"bot@example.com:{TOKEN}".encode()).decode()
    shown = [caplog.text, repr(cloud), repr(dc), repr(CLOUD), repr(DC)]
    shown += [text for error in errors for text in (str(error), repr(error))]
    assert len(caplog.records) >= 2
    assert not [text for text in shown for secret in (TOKEN, PAT, basic) if secret in text]


async def test_open_session_sets_timeouts_and_headers():
    """The session carries the configured timeouts, JSON accept and the flavor's auth."""
    settings = replace(CLOUD, timeout=12.0, connect_timeout=3.0)
    async with open_session(settings) as cloud, open_session(DC) as dc:
        assert (cloud.timeout.total, cloud.timeout.connect) == (12.0, 3.0)
        assert cloud.headers["Accept"] == "application/json"
        assert cloud.headers["Authorization"].startswith("Basic ")
        assert dc.headers["Authorization"] == f"Bearer {PAT}"


def test_jira_settings_name_the_missing_credential():
    """Jira settings without their flavor's credentials cannot be built; the error names it."""
    with pytest.raises(ConfigError, match="JIRA_API_TOKEN"):
        replace(CLOUD, api_token=None)
    with pytest.raises(ConfigError, match="JIRA_PAT"):
        replace(DC, pat=None)


async def test_unreachable_jira_says_why_without_credentials(make_client):
    """A refused connection names the cause and the address an operator must check, no token."""
    client = make_client(base_url="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(JiraUnavailableError) as caught:
        await client.check_credentials()
    text = str(caught.value)
    assert "Connect call failed" in text and "127.0.0.1" in text
    assert CLOUD.api_token not in text


async def test_unresolvable_jira_names_the_host(make_client):
    """A DNS failure names the host Jira was looked up by, so an operator can fix the URL."""
    client = make_client(base_url="https://jira.nowhere.invalid", max_retries=0)
    with pytest.raises(JiraUnavailableError) as caught:
        await client.check_credentials()
    assert "cannot resolve jira.nowhere.invalid:443" in str(caught.value)
