"""The aiohttp client for Jira's REST API: bulk reads by key, auth, rate limits and errors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncGenerator, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiohttp
from yarl import URL

from service.config import JiraSettings
from service.jira.answer import Reading, Tally, check_key, check_keys, merge
from service.jira.pacing import CircuitBreaker, RateLimiter, ThrottledError, parse_retry_after
from service.model import Issue, normalize_issue

# The errors, most general first. `endpoint` is always "METHOD /path", never a full URL.
#
# JiraError                    an answer we cannot use (an unexpected 4xx, JSON of the wrong shape)
#  +-- JiraAuthError           401, 403, or X-Seraph-LoginReason says the credentials failed
#  +-- JiraRateLimitedError    429 still after every retry, or a pause longer than we will wait
#  +-- JiraUnavailableError    5xx, a timeout, a connection error, a body that is not JSON
#       +-- CircuitOpenError   refused without asking Jira, after repeated failures


# How Jira refuses a JQL (search or webhook filter) naming a project it lacks, or hides from us.
_UNKNOWN_PROJECT = re.compile(r"The value '([^']+)' does not exist for the field 'project'")


def unknown_projects_in(text: str) -> set[str]:
    """The project keys a 400's message says Jira does not have."""
    return {name.upper() for name in _UNKNOWN_PROJECT.findall(text)}


class JiraError(Exception):
    """Jira answered in a way this client cannot use; the base of every error here."""

    def __init__(self, endpoint: str, status: int | None, problem: str) -> None:
        answered = f" answered {status}" if status is not None else ""
        super().__init__(f"Jira {endpoint}{answered}: {problem}")
        self.endpoint, self.status, self.problem = endpoint, status, problem


class JiraAuthError(JiraError):
    def __init__(self, endpoint: str, status: int, reason: str | None = None) -> None:
        why = f" ({reason})" if reason else ""
        problem = f"credentials refused{why}; check JIRA_EMAIL and JIRA_API_TOKEN, or JIRA_PAT"
        super().__init__(endpoint, status, problem)
        self.reason = reason


class JiraRateLimitedError(JiraError):
    def __init__(self, endpoint: str, retry_after: float, status: int | None = 429) -> None:
        super().__init__(endpoint, status, f"rate limited; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class JiraUnavailableError(JiraError):
    def __init__(
        self, endpoint: str, status: int | None, problem: str, retry_after: float | None = None
    ) -> None:
        super().__init__(endpoint, status, problem)
        self.retry_after = retry_after


class CircuitOpenError(JiraUnavailableError):
    def __init__(self, endpoint: str, retry_after: float) -> None:
        problem = f"not called after repeated failures; next try in {retry_after:.1f}s"
        super().__init__(endpoint, None, problem, retry_after)


FIELDS = ("status", "summary", "assignee", "priority", "updated")
USER_AGENT = "jira-status-cache/0.1"
_LOGIN_FAILED = frozenset({"AUTHENTICATED_FAILED", "AUTHENTICATION_DENIED"})
# Data Center fails a whole `key in (...)` search naming each key it does not know.
_UNKNOWN_KEY = re.compile(
    r"An issue with key '([^']+)' does not exist for field 'key'"
    r"|The issue key '([^']*)' for field 'key' is invalid"
)
T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Stats:
    """Plain counters for metrics: requests by (route, status), 429s, seconds held at the gate."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    rate_limited: int = 0
    rate_limit_wait: float = 0.0


def open_session(settings: JiraSettings) -> aiohttp.ClientSession:
    """The one session of the process; call inside the running loop (the app's lifespan)."""
    timeout = aiohttp.ClientTimeout(total=settings.timeout, connect=settings.connect_timeout)
    headers = {
        "Accept": "application/json",
        "Authorization": _authorization(settings),
        "User-Agent": USER_AGENT,
    }
    return aiohttp.ClientSession(timeout=timeout, headers=headers)


def _authorization(settings: JiraSettings) -> str:
    # JiraSettings is complete by construction: the flavor's credentials are there.
    if settings.flavor == "dc":
        return f"Bearer {settings.pat}"
    # Encoded by hand: aiohttp 3.14 deprecates BasicAuth, and its replacement is new in 3.14.
    pair = f"{settings.email}:{settings.api_token}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


class JiraClient:
    """Reads issues from one Jira site, sharing one concurrency cap, gate and breaker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: JiraSettings,
        *,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._session = session
        self._base = settings.base_url.rstrip("/")
        self._flavor = settings.flavor
        self._api = "/rest/api/2" if settings.flavor == "dc" else "/rest/api/3"
        self._batch = settings.batch_size
        self._retries = settings.max_retries
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._limiter = limiter or RateLimiter(
            max_rps=settings.max_rps,
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            max_wait=settings.max_wait,
        )
        self._breaker = breaker or CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cool_off
        )
        self.stats = Stats()

    def __repr__(self) -> str:
        return f"JiraClient(host={URL(self._base).host!r}, flavor={self._flavor!r})"

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    @property
    def health(self) -> Literal["ok", "degraded"]:
        breaker = self._breaker
        return "ok" if breaker.state == "closed" and breaker.failures == 0 else "degraded"

    async def check_credentials(self) -> dict[str, Any]:
        """Return who Jira thinks we are; raise JiraAuthError when it does not know us."""
        call = _Call("GET", f"{self._api}/myself")
        _, body = await self._send(call)
        if not isinstance(body, dict):
            raise JiraError(call.endpoint, 200, "the user is not a JSON object")
        return body

    async def request(
        self, method: str, path: str, accept: tuple[int, ...] = (200,), body: Any = None
    ) -> tuple[int, Any]:
        """One call to any endpoint through the gate, retries and breaker; for other modules."""
        return await self._send(_Call(method, path, accept=accept, body=body))

    @property
    def flavor(self) -> str:
        return self._flavor

    async def call(
        self, method: str, path: str, body: Any = None, accept: tuple[int, ...] = (200,)
    ) -> tuple[int, Any]:
        """One request under the REST API root (e.g. "/search/jql"), with every safeguard."""
        return await self.request(method, f"{self._api}{path}", accept, body)

    async def read_issue(self, key: str) -> Issue | None:
        """Read one issue by key or numeric id; None when Jira has none we may see."""
        raw = await self._get_issue(check_key(key))
        return None if raw is None else normalize_issue(raw)

    async def read_issues(self, keys: Sequence[str]) -> Reading:
        async with contextlib.aclosing(self.read_in_parts(keys)) as parts:
            return merge([part async for part in parts])

    async def read_in_parts(self, keys: Sequence[str]) -> AsyncGenerator[Reading]:
        """Read the keys in bulk, a reading per chunk as it arrives, then one for the rest.

        The last reading settles the keys no chunk answered: not found, moved or unusable.
        A caller can store each part at once, so a read cut short keeps what it read.
        """
        wanted, rest = check_keys(keys)
        # One key is one GET, which also answers a moved key: no bulk call needed.
        bulk = wanted if len(wanted) > 1 else []
        fetch = self._search if self._flavor == "dc" else self._bulkfetch_part
        seen: set[str] = set()
        async with contextlib.aclosing(_as_completed(map(fetch, self._chunks(bulk)))) as parts:
            async for part in parts:
                seen |= part.seen | set(part.not_found)
                yield part.reading()
        await self._settle([key for key in wanted if key not in seen], rest)
        yield rest.reading()

    def _chunks(self, keys: list[str]) -> list[list[str]]:
        return [keys[i : i + self._batch] for i in range(0, len(keys), self._batch)]

    async def _settle(self, keys: list[str], tally: Tally) -> None:
        """Settle keys a bulk answer left out: deleted, hidden, moved, or dropped transiently.

        A search by key answers them in bounded batches, and its 400 names the unknown ones;
        a moved key answers under its new key, which pairs it up when it is the only one left.
        """
        if len(keys) == 1:
            tally.confirm(keys[0], await self._get_issue(keys[0]))
            return
        for found in await _run_all(map(self._search, self._chunks(keys))):
            tally.merge(found)
        asked = set(keys)
        strangers = [i for i in tally.issues.values() if not {i.key, str(i.id)} & asked]
        unsettled = [key for key in keys if key not in tally.seen and key not in tally.not_found]
        if len(unsettled) == 1 and len(strangers) == 1:
            tally.moved[unsettled[0]] = strangers[0].id
            return
        for key, raw in zip(
            unsettled, await _run_all(map(self._get_issue, unsettled)), strict=True
        ):
            tally.confirm(key, raw)

    async def _get_issue(self, key: str) -> Any:
        path = f"{self._api}/issue/{key}"
        route = f"GET {self._api}/issue/{{key}}"
        call = _Call("GET", path, route, (200, 404), params={"fields": ",".join(FIELDS)})
        status, body = await self._send(call)
        return None if status == 404 else body

    async def _bulkfetch_part(self, keys: list[str]) -> Tally:
        body = {"issueIdsOrKeys": keys, "fields": list(FIELDS)}
        call = _Call("POST", f"{self._api}/issue/bulkfetch", body=body)
        _, answer = await self._send(call)
        return Tally.of(_issues(call, answer))

    async def _search(self, keys: list[str]) -> Tally:
        """Search `key in (...)`, dropping the keys Jira names as unknown, page by page."""
        unknown: list[str] = []
        found: list[Any] = []
        page: str | int | None = None
        while keys:
            call = _Call("POST", self._search_path, accept=(200, 400), body=self._query(keys, page))
            status, answer = await self._send(call)
            if status == 400:
                named = _unknown_keys(call, answer, keys)
                unknown += named
                keys = [key for key in keys if key not in named]
                found, page = [], None
                continue
            issues = _issues(call, answer)
            found += issues
            if not issues or (page := self._next_page(answer, len(found))) is None:
                break
        tally = Tally.of(found)
        tally.not_found.extend(unknown)
        return tally

    @property
    def _search_path(self) -> str:
        # Cloud removed the old search (410 Gone); Data Center has only the old one.
        return f"{self._api}/search" if self._flavor == "dc" else f"{self._api}/search/jql"

    def _query(self, keys: list[str], page: str | int | None) -> dict[str, Any]:
        # Keys are quoted; numeric ids are not, since JQL reads a quoted number as a key.
        terms = ", ".join(key if key.isdigit() else f'"{key}"' for key in keys)
        query: dict[str, Any] = {
            "jql": f"key in ({terms})",
            "maxResults": len(keys),
            "fields": list(FIELDS),
        }
        if self._flavor == "dc":
            query["startAt"] = page or 0
        elif page is not None:
            query["nextPageToken"] = page
        return query

    def _next_page(self, answer: Any, found: int) -> str | int | None:
        """Where the next page starts: Data Center's offset, Cloud's token; None when done."""
        if self._flavor == "dc":
            return found if found < _total(answer) else None
        token = answer.get("nextPageToken") if isinstance(answer, dict) else None
        return token if isinstance(token, str) and token else None

    async def _send(self, call: _Call) -> tuple[int, Any]:
        """One logical request: the breaker, then attempts with retries; never raises _Retry."""
        if (wait := self._breaker.admit()) is not None:
            raise CircuitOpenError(call.endpoint, wait)
        try:
            answer = await self._retry(call)
        except ThrottledError as exc:
            # Nothing was sent, so this says nothing about Jira's health.
            raise JiraRateLimitedError(call.endpoint, exc.retry_after, None) from None
        except (JiraUnavailableError, JiraRateLimitedError):
            self._fail()
            raise
        except JiraError:
            self._breaker.record_success()  # Jira answered, if not as we wished: it is up
            raise
        self._breaker.record_success()
        return answer

    async def _retry(self, call: _Call) -> tuple[int, Any]:
        attempt = 0
        while True:
            try:
                return await self._attempt(call)
            except _Retry as failure:
                delay = self._delay(failure, attempt)
                if attempt >= self._retries:
                    raise failure.error(call.endpoint, delay) from failure.__cause__
                logger.warning("Jira %s %s; retry in %.1fs", call.endpoint, failure.problem, delay)
                if not failure.shared:
                    await self._limiter.wait(delay)
                attempt += 1

    def _delay(self, failure: _Retry, attempt: int) -> float:
        delay = failure.retry_after
        delay = self._limiter.backoff(attempt) if delay is None else delay
        if failure.shared:
            # Jira limits the whole site, not one request: hold every request of the process,
            # the next attempt of this one included, even when this one gives up.
            self._limiter.pause(delay)
        return delay

    async def _attempt(self, call: _Call) -> tuple[int, Any]:
        async with self._slots:
            self.stats.rate_limit_wait += await self._limiter.acquire()
            try:
                async with self._session.request(
                    call.method, self._base + call.path, json=call.body, params=call.params
                ) as response:
                    self.stats.requests[call.route, str(response.status)] += 1
                    return await self._answer(call, response)
            except TimeoutError as exc:
                self.stats.requests[call.route, "timeout"] += 1
                raise _Retry(None, None, "timed out") from exc
            except aiohttp.ClientError as exc:
                self.stats.requests[call.route, "connection_error"] += 1
                problem = f"could not be reached: {_reason(exc)}"
                if _refused(exc):
                    # Nothing listens there: retries would only hold a reader for nothing.
                    raise JiraUnavailableError(call.endpoint, None, problem) from exc
                raise _Retry(None, None, problem) from exc

    async def _answer(self, call: _Call, response: aiohttp.ClientResponse) -> tuple[int, Any]:
        status = response.status
        _check_auth(call.endpoint, response)
        if status == 429 or status >= 500:
            if status == 429:
                self.stats.rate_limited += 1
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Retry(status, retry_after, f"answered {status}")
        body = await _read_json(response)
        if status not in call.accept:
            raise JiraError(call.endpoint, status, _message(body))
        if body is None and status != 204:  # 204: a DELETE's empty answer
            # Jira always answers JSON, even for 404; HTML means a proxy or a wrong base URL,
            # and must not be read as "no such issue".
            raise JiraUnavailableError(
                call.endpoint, status, "answered with a body that is not JSON"
            )
        return status, body

    def _fail(self) -> None:
        was = self._breaker.state
        self._breaker.record_failure()
        if self._breaker.state == "open" and was != "open":
            logger.error("Jira circuit opened after %d failures", self._breaker.failures)


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    template: str | None = None  # the endpoint with any issue key templated out
    accept: tuple[int, ...] = (200,)
    body: Any = None
    params: dict[str, str] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def route(self) -> str:
        """What the counters count by, so that they stay few."""
        return self.template or self.endpoint


class _Retry(Exception):
    """A transient failure the retry loop handles; callers see a public error instead."""

    def __init__(self, status: int | None, retry_after: float | None, problem: str) -> None:
        super().__init__(problem)
        self.status, self.retry_after, self.problem = status, retry_after, problem

    @property
    def shared(self) -> bool:
        """Whether the pause it asks for holds every request, not just this one."""
        return self.status in (429, 503)

    def error(self, endpoint: str, delay: float) -> JiraError:
        if self.status == 429:
            return JiraRateLimitedError(endpoint, delay)
        return JiraUnavailableError(endpoint, self.status, self.problem, self.retry_after)


def _check_auth(endpoint: str, response: aiohttp.ClientResponse) -> None:
    # Jira may answer bad credentials with a 200 as an anonymous user; only this header tells.
    seraph = response.headers.get("X-Seraph-LoginReason", "")
    failed = [word.strip() for word in seraph.split(",") if word.strip() in _LOGIN_FAILED]
    # e.g. "CAPTCHA_CHALLENGE; login-url=...": after too many failed logins on Data Center.
    denied = response.headers.get("X-Authentication-Denied-Reason", "").split(";")[0].strip()
    if failed or response.status in (401, 403):
        raise JiraAuthError(endpoint, response.status, failed[0] if failed else denied or None)


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    try:
        return json.loads(await response.read())
    except ValueError:  # also UnicodeDecodeError
        return None


def _texts(body: Any) -> list[str]:
    """Jira's error strings: `errorMessages`, then the values of `errors`."""
    messages = body.get("errorMessages") if isinstance(body, dict) else None
    errors = body.get("errors") if isinstance(body, dict) else None
    texts = [*(messages or []), *(errors.values() if isinstance(errors, dict) else [])]
    return [str(text) for text in texts]


def _message(body: Any) -> str:
    return "; ".join(_texts(body))[:300] or "no error message"


def _issues(call: _Call, body: Any) -> list[Any]:
    issues = body.get("issues") if isinstance(body, dict) else None
    if not isinstance(issues, list):
        raise JiraError(call.endpoint, 200, "the answer has no list of issues")
    return issues


def _total(body: Any) -> int:
    total = body.get("total") if isinstance(body, dict) else None
    return total if isinstance(total, int) else 0


def _unknown_keys(call: _Call, body: Any, keys: list[str]) -> list[str]:
    found = (_UNKNOWN_KEY.search(text) for text in _texts(body))
    named = {(match[1] or match[2]).upper() for match in found if match}
    if not named & set(keys):
        raise JiraError(call.endpoint, 400, _message(body))
    logger.info("Jira does not know %s; searching again without", sorted(named & set(keys)))
    return [key for key in keys if key in named]


def _refused(exc: aiohttp.ClientError) -> bool:
    cause = getattr(exc, "os_error", None)
    return isinstance(cause, ConnectionRefusedError) or (
        isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
    )


def _reason(exc: aiohttp.ClientError) -> str:
    """What went wrong, for an operator: e.g. "Connect call failed ('10.0.0.5', 443)"."""
    # aiohttp's own text names host and port, never the URL's path, query or credentials.
    cause = getattr(exc, "os_error", None) or exc
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # The resolver's own text ("Name or service not known") does not say which name.
        return f"{type(exc).__name__}: cannot resolve {exc.host}:{exc.port} ({str(cause)[:200]})"
    return f"{type(exc).__name__}: {str(cause)[:200]}"


async def _as_completed(coros: Iterable[Coroutine[Any, Any, T]]) -> AsyncGenerator[T]:
    """Run together, yielding results as they come; on a failure or a close cancel the rest."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _run_all(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run together; on the first failure cancel the rest and raise that error, unwrapped."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]
